import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardTitle } from "@/components/ui/card";
import { Label, Select } from "@/components/ui/input";
import { ErrorState, Loading } from "@/components/ui/states";
import {
  useBillingSettings,
  usePaymentAccount,
  useUpdateBillingSettings,
} from "@/hooks/queries/billing";
import { type FormEvent, useEffect, useState } from "react";

/** How the tenant pays: invoice only, or through Stripe with its subscription's state. */
export function PaymentStatus() {
  const payment = usePaymentAccount();
  return (
    <Card>
      <CardTitle>Payment</CardTitle>
      {payment.isPending ? (
        <Loading />
      ) : payment.isError ? (
        <ErrorState error={payment.error} />
      ) : payment.data.mode === "invoice_only" ? (
        <div data-testid="payment-mode" className="space-y-1 text-sm">
          <Badge>Invoice only</Badge>
          <p className="text-slate-500">
            Payments do not go through Stripe here: each month's invoice is issued to be paid by
            transfer.
          </p>
        </div>
      ) : (
        <dl data-testid="payment-mode" className="grid grid-cols-2 gap-x-4 gap-y-1 text-sm">
          <dt className="text-slate-500">Paid through</dt>
          <dd>
            <Badge tone="green">Stripe</Badge>
          </dd>
          <dt className="text-slate-500">Subscription</dt>
          <dd>{payment.data.subscription_status ?? "none"}</dd>
          <dt className="text-slate-500">Open invoices</dt>
          <dd>{payment.data.invoices_open}</dd>
          <dt className="text-slate-500">Failed payments</dt>
          <dd className={payment.data.invoices_failed ? "font-medium text-red-700" : undefined}>
            {payment.data.invoices_failed}
          </dd>
          <dt className="text-slate-500">Waiting to be sent</dt>
          <dd>{payment.data.invoices_pending_sync}</dd>
        </dl>
      )}
    </Card>
  );
}

/** The invoices' currency; billing admins and tenant admins change it, from the next close. */
export function BillingSettingsCard({ mayWrite }: { mayWrite: boolean }) {
  const settings = useBillingSettings();
  const update = useUpdateBillingSettings();
  const [currency, setCurrency] = useState("");
  useEffect(() => {
    if (settings.data) setCurrency(settings.data.currency);
  }, [settings.data]);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    update.mutate({ currency });
  };
  return (
    <Card>
      <CardTitle>Billing settings</CardTitle>
      {settings.isPending ? (
        <Loading />
      ) : settings.isError ? (
        <ErrorState error={settings.error} />
      ) : (
        <form onSubmit={submit} className="space-y-3">
          <div>
            <Label htmlFor="billing-currency">Invoice currency</Label>
            <Select
              id="billing-currency"
              value={currency}
              disabled={!mayWrite}
              onChange={(e) => setCurrency(e.target.value)}
            >
              {settings.data.currencies.map((code) => (
                <option key={code} value={code}>
                  {code}
                </option>
              ))}
            </Select>
            <p className="mt-1 text-xs text-slate-500">Applies from the next invoice.</p>
          </div>
          {update.isError ? <ErrorState error={update.error} /> : null}
          {update.isSuccess ? <p className="text-sm text-green-700">Saved.</p> : null}
          {mayWrite ? (
            <div className="flex justify-end">
              <Button
                type="submit"
                disabled={update.isPending || currency === settings.data.currency}
              >
                Save settings
              </Button>
            </div>
          ) : null}
        </form>
      )}
    </Card>
  );
}
