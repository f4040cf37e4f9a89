import type { Schemas } from "@/api/client";
import { Badge } from "@/components/ui/badge";
import { Card, CardTitle, Stat } from "@/components/ui/card";
import { ErrorState, Loading } from "@/components/ui/states";
import { useTenantPlan } from "@/hooks/queries/billing";
import { cn } from "@/lib/cn";
import { formatTokens } from "@/lib/format";
import { FEATURE_LABELS, type Meter, formatBytes, formatUsdText, meterOf } from "./meters";

const FILL: Record<Meter["tone"], string> = {
  green: "bg-green-600",
  amber: "bg-amber-500",
  red: "bg-red-600",
};

/** The tenant's plan: its allowance, each entitlement as a meter, and this month so far. */
export function PlanUsage() {
  const plan = useTenantPlan();
  if (plan.isPending) return <Loading what="Loading the plan" />;
  if (plan.isError) return <ErrorState error={plan.error} />;
  const { plan: current, entitlements, features, period } = plan.data;
  return (
    <div className="space-y-4">
      <Card>
        <div className="flex flex-wrap items-start justify-between gap-4">
          <div>
            <CardTitle>Plan</CardTitle>
            <div className="text-2xl font-semibold" data-testid="plan-name">
              {current.name}
            </div>
            {current.description ? (
              <p className="mt-1 text-sm text-slate-500">{current.description}</p>
            ) : null}
          </div>
          <dl className="grid grid-cols-2 gap-x-6 gap-y-1 text-sm">
            <dt className="text-slate-500">Monthly fee</dt>
            <dd>{formatUsdText(current.monthly_fee_usd)}</dd>
            <dt className="text-slate-500">Included</dt>
            <dd>{allowance(current)}</dd>
            <dt className="text-slate-500">Beyond it</dt>
            <dd>
              {current.overage
                ? `billed at provider cost + ${Number(current.markup_pct)}%`
                : "calls are refused"}
            </dd>
          </dl>
        </div>
        <ul className="mt-4 flex flex-wrap gap-2" aria-label="Features">
          {Object.entries(features).map(([feature, on]) => (
            <li key={feature}>
              <Badge tone={on ? "green" : "neutral"}>
                {FEATURE_LABELS[feature] ?? feature}: {on ? "included" : "not included"}
              </Badge>
            </li>
          ))}
        </ul>
      </Card>

      <Card>
        <CardTitle>Usage against the plan</CardTitle>
        <ul className="grid gap-4 md:grid-cols-2" aria-label="Entitlements">
          {entitlements.map((usage) => (
            <MeterRow key={usage.entitlement} meter={meterOf(usage)} />
          ))}
        </ul>
      </Card>

      <div className="grid grid-cols-2 gap-4 lg:grid-cols-4">
        <Stat
          label="Billed this month"
          value={formatUsdText(period.billed_usd)}
          hint="before tax"
        />
        <Stat label="Provider cost" value={formatUsdText(period.provider_cost_usd)} />
        <Stat label="Model calls" value={period.calls.toLocaleString("en-US")} />
        <Stat
          label="Tokens this month"
          value={formatTokens(period.prompt_tokens + period.completion_tokens)}
          hint={`${period.executions} executions, ${formatBytes(period.storage_bytes)} stored`}
        />
      </div>
    </div>
  );
}

function allowance(plan: Schemas["Plan"]): string {
  const parts = [];
  if (plan.included_spend_usd !== null) {
    parts.push(`${formatUsdText(plan.included_spend_usd)} of provider cost`);
  }
  if (plan.included_tokens !== null) parts.push(`${formatTokens(plan.included_tokens)} tokens`);
  return parts.length ? parts.join(" or ") : plan.overage ? "nothing" : "unlimited";
}

function MeterRow({ meter }: { meter: Meter }) {
  return (
    <li data-testid={`meter-${meter.entitlement}`}>
      <div className="mb-1 flex justify-between text-sm">
        <span className="font-medium text-slate-700">{meter.label}</span>
        <span className={cn(meter.tone === "red" && "font-medium text-red-700")}>{meter.text}</span>
      </div>
      {meter.fill !== null ? (
        <div
          className="h-2 w-full rounded-full bg-slate-100"
          role="meter"
          aria-label={meter.label}
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={Math.round(meter.fill * 100)}
        >
          <div
            className={cn("h-2 rounded-full", FILL[meter.tone])}
            style={{ width: `${meter.fill * 100}%` }}
          />
        </div>
      ) : null}
    </li>
  );
}
