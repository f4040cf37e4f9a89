import { AlertChannels } from "@/components/Alerts/Channels";
import { AlertDeliveries } from "@/components/Alerts/Deliveries";
import { Invoices } from "@/components/Billing/Invoices";
import { BillingSettingsCard, PaymentStatus } from "@/components/Billing/Payment";
import { PlanUsage } from "@/components/Billing/PlanUsage";
import { Empty, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { can } from "@/lib/permissions";
import type { ReactNode } from "react";

/**
 * Billing for billing admins and tenant admins: the plan and usage against it, invoices,
 * how the tenant pays, and where its alerts go. Each part shows only to a role that may
 * read it (the server refuses the rest anyway).
 */
export function Billing() {
  const { data: me } = useMe();
  const mayRead = can(me, "billing:read");
  const mayAlert = can(me, "alerts:manage");
  if (!mayRead && !mayAlert) {
    return <Empty>Your role does not include billing: a billing or tenant admin's does.</Empty>;
  }
  return (
    <div className="space-y-8">
      <PageHeader title="Billing" />
      {mayRead ? (
        <>
          <PlanUsage />
          <Section title="Invoices">
            <Invoices />
          </Section>
          <div className="grid gap-4 lg:grid-cols-2">
            <PaymentStatus />
            <BillingSettingsCard mayWrite={can(me, "billing:write")} />
          </div>
        </>
      ) : null}
      {mayAlert ? (
        <>
          <Section title="Alert channels">
            <AlertChannels />
          </Section>
          <Section title="Alert delivery log">
            <AlertDeliveries />
          </Section>
        </>
      ) : null}
    </div>
  );
}

function Section({ title, children }: { title: string; children: ReactNode }) {
  return (
    <section aria-label={title}>
      <h2 className="mb-3 text-lg font-semibold">{title}</h2>
      {children}
    </section>
  );
}
