import type { Schemas } from "@/api/client";
import { formatUsdText } from "@/components/Billing/meters";
import { Stat } from "@/components/ui/card";
import { Input, Label } from "@/components/ui/input";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { useMe } from "@/hooks/queries/auth";
import { useRevenue } from "@/hooks/queries/plans";
import { formatPercent } from "@/lib/format";
import { useState } from "react";

/** The last whole month, YYYY-MM (UTC): the latest one with invoices. */
export function lastMonth(now: Date = new Date()): string {
  const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  return month.toISOString().slice(0, 7);
}

/** A gross margin as the API gives it ("0.7312") as a percentage; none without revenue. */
export function marginText(margin: string | null): string {
  return margin === null ? "—" : formatPercent(Number(margin));
}

/** Per-request cost, precise enough to compare with a target such as $0.02. */
export function perRequestText(cost: string | null): string {
  if (cost === null) return "—";
  const value = Number(cost);
  return `$${value.toFixed(value >= 0.01 ? 4 : 6)}`;
}

export function AdminRevenue() {
  const { data: me } = useMe();
  const [from, setFrom] = useState(lastMonth);
  const [to, setTo] = useState(lastMonth);
  const revenue = useRevenue(from, to);

  if (!me?.is_super_admin) return <Empty>Only a super admin sees the platform's revenue.</Empty>;
  return (
    <div>
      <PageHeader title="Revenue & margin" />
      <div className="mb-6 flex flex-wrap items-end gap-4">
        <div>
          <Label htmlFor="revenue-from">From (month)</Label>
          <Input
            id="revenue-from"
            type="month"
            value={from}
            onChange={(e) => e.target.value && setFrom(e.target.value)}
          />
        </div>
        <div>
          <Label htmlFor="revenue-to">To (month)</Label>
          <Input
            id="revenue-to"
            type="month"
            value={to}
            onChange={(e) => e.target.value && setTo(e.target.value)}
          />
        </div>
        <p className="pb-2 text-sm text-slate-500">From closed months' invoices, before tax.</p>
      </div>
      {revenue.isPending ? (
        <Loading what="Loading revenue" />
      ) : revenue.isError ? (
        <ErrorState error={revenue.error} />
      ) : (
        <RevenueReport report={revenue.data} />
      )}
    </div>
  );
}

function RevenueReport({ report }: { report: Schemas["Revenue"] }) {
  const { total } = report;
  return (
    <>
      <div className="mb-6 grid grid-cols-2 gap-4 lg:grid-cols-4">
        <Stat
          label="Revenue"
          value={formatUsdText(total.revenue_usd)}
          hint={`${total.invoices} invoice${total.invoices === 1 ? "" : "s"}`}
        />
        <Stat label="Provider cost" value={formatUsdText(total.provider_cost_usd)} />
        <Stat label="Gross margin" value={marginText(total.gross_margin)} />
        <Stat
          label="Cost per request"
          value={perRequestText(total.cost_per_request_usd)}
          hint={`${total.calls.toLocaleString("en-US")} model calls`}
        />
      </div>
      {report.tenants.length === 0 ? (
        <Empty>No invoices in these months: close a month to issue them.</Empty>
      ) : (
        <Table aria-label="Revenue by tenant">
          <thead>
            <tr>
              <Th>Tenant</Th>
              <Th>Invoices</Th>
              <Th>Revenue</Th>
              <Th>Provider cost</Th>
              <Th>Gross margin</Th>
              <Th>Calls</Th>
              <Th>Cost per request</Th>
            </tr>
          </thead>
          <tbody>
            {report.tenants.map((row) => (
              <tr key={row.tenant_id} data-testid={`revenue-${row.tenant_name}`}>
                <Td className="font-medium">{row.tenant_name}</Td>
                <Td>{row.invoices}</Td>
                <Td>{formatUsdText(row.revenue_usd)}</Td>
                <Td>{formatUsdText(row.provider_cost_usd)}</Td>
                <Td>{marginText(row.gross_margin)}</Td>
                <Td>{row.calls.toLocaleString("en-US")}</Td>
                <Td>{perRequestText(row.cost_per_request_usd)}</Td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </>
  );
}
