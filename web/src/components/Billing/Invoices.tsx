import { type Schemas, errorMessage } from "@/api/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { ErrorState, Loading } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import {
  type InvoiceFormat,
  fetchInvoiceFile,
  useInvoice,
  useInvoices,
} from "@/hooks/queries/billing";
import { saveBlob } from "@/lib/download";
import { formatDateTime } from "@/lib/format";
import { useState } from "react";
import { formatMinor, paymentStatus } from "./meters";

type Invoice = Schemas["Invoice"];

/** The tenant's invoices, each with its lines in a dialog and its PDF and CSV. */
export function Invoices() {
  const [invoicesOffset, setInvoicesOffset] = useState(0);
  const invoices = useInvoices(invoicesOffset);
  const [open, setOpen] = useState<Invoice | null>(null);
  return (
    <>
      <DataTable
        label="Invoices"
        query={invoices}
        paging={{ offset: invoicesOffset, onChange: setInvoicesOffset }}
        empty="No invoices yet: the first is issued when this month closes."
        rowKey={(invoice) => invoice.id}
        rowTestId={(invoice) => `invoice-${invoice.number}`}
        columns={[
          {
            header: "Number",
            cell: (invoice) => (
              <button
                type="button"
                className="font-medium text-slate-900 underline"
                onClick={() => setOpen(invoice)}
              >
                {invoice.number}
              </button>
            ),
          },
          { header: "Period", cell: (invoice) => invoice.period },
          { header: "Plan", cell: (invoice) => invoice.plan },
          {
            header: "Total",
            cell: (invoice) => formatMinor(invoice.total_minor, invoice.currency),
          },
          {
            header: "Payment",
            cell: (invoice) => <PaymentBadge status={invoice.payment_status} />,
          },
          { header: "Issued", cell: (invoice) => formatDateTime(invoice.issued_at) },
          {
            header: "",
            className: "text-right",
            cell: (invoice) => <Downloads invoice={invoice} />,
          },
        ]}
      />
      <InvoiceDialog invoice={open} onClose={() => setOpen(null)} />
    </>
  );
}

function PaymentBadge({ status }: { status: string }) {
  const { label, tone } = paymentStatus(status);
  return <Badge tone={tone}>{label}</Badge>;
}

/** PDF and CSV buttons; a refused download shows the server's reason beside them. */
function Downloads({ invoice }: { invoice: Invoice }) {
  const [error, setError] = useState<string | null>(null);
  const download = async (format: InvoiceFormat) => {
    setError(null);
    try {
      saveBlob(await fetchInvoiceFile(invoice.id, format), `${invoice.number}.${format}`);
    } catch (problem) {
      setError(errorMessage(problem));
    }
  };
  return (
    <div className="flex items-center justify-end gap-2">
      {error ? (
        <span role="alert" className="text-sm text-red-700">
          {error}
        </span>
      ) : null}
      <Button variant="secondary" size="sm" onClick={() => download("pdf")}>
        PDF
      </Button>
      <Button variant="secondary" size="sm" onClick={() => download("csv")}>
        CSV
      </Button>
    </div>
  );
}

function InvoiceDialog({ invoice, onClose }: { invoice: Invoice | null; onClose: () => void }) {
  const detail = useInvoice(invoice?.id ?? null);
  return (
    <Dialog open={invoice !== null} title={`Invoice ${invoice?.number ?? ""}`} onClose={onClose}>
      {detail.isPending ? (
        <Loading what="Loading the invoice" />
      ) : detail.isError ? (
        <ErrorState error={detail.error} />
      ) : (
        <div className="space-y-4 text-sm">
          <dl className="grid grid-cols-2 gap-x-4 gap-y-1">
            <dt className="text-slate-500">Period</dt>
            <dd>{detail.data.period}</dd>
            <dt className="text-slate-500">Plan</dt>
            <dd>{detail.data.plan}</dd>
            <dt className="text-slate-500">Model calls</dt>
            <dd>{detail.data.calls.toLocaleString("en-US")}</dd>
            <dt className="text-slate-500">Payment</dt>
            <dd>
              <PaymentBadge status={detail.data.payment_status} />
            </dd>
          </dl>
          <Table aria-label="Invoice lines">
            <thead>
              <tr>
                <Th>Line</Th>
                <Th className="text-right">Amount</Th>
              </tr>
            </thead>
            <tbody>
              {/* The lines include tax, as its own line, when the deployment charges it. */}
              {detail.data.lines.map((line) => (
                <tr key={line.position}>
                  <Td>{line.description}</Td>
                  <Td className="text-right">
                    {formatMinor(line.amount_minor, detail.data.currency)}
                  </Td>
                </tr>
              ))}
              <tr className="font-semibold">
                <Td>Total</Td>
                <Td className="text-right" data-testid="invoice-total">
                  {formatMinor(detail.data.total_minor, detail.data.currency)}
                </Td>
              </tr>
            </tbody>
          </Table>
          <div className="flex justify-between">
            <Downloads invoice={detail.data} />
            <Button onClick={onClose}>Close</Button>
          </div>
        </div>
      )}
    </Dialog>
  );
}
