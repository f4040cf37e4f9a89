import { Card, CardTitle, Stat } from "@/components/ui/card";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { useUsageSummary } from "@/hooks/queries/usage";
import { formatPercent, formatTokens, formatUsd, monthWindow } from "@/lib/format";
import { can } from "@/lib/permissions";

export function Overview() {
  const { data: me } = useMe();
  const mayReadUsage = can(me, "usage:read");
  const window = monthWindow();
  const summary = useUsageSummary(window, { enabled: mayReadUsage && !!me?.tenant_id });

  return (
    <div>
      <PageHeader title="Overview" />
      <section aria-label="Gateway this month" className="mb-8">
        <h2 className="mb-3 text-sm font-semibold uppercase text-slate-500">
          Gateway, this month (UTC)
        </h2>
        {me?.tenant_id === null ? (
          <Empty>
            You are signed in to the platform, not to a tenant: usage is kept per tenant. Manage
            tenants under Admin.
          </Empty>
        ) : !mayReadUsage ? (
          <Empty>Your role does not include usage figures; ask a tenant admin.</Empty>
        ) : summary.isPending ? (
          <Loading what="Loading usage" />
        ) : summary.isError ? (
          <ErrorState error={summary.error} />
        ) : (
          <div className="grid grid-cols-2 gap-4 lg:grid-cols-4">
            <Stat
              label="Spend"
              value={formatUsd(summary.data.cost_usd)}
              hint={
                summary.data.unpriced_calls
                  ? `${summary.data.unpriced_calls} unpriced calls not included`
                  : undefined
              }
            />
            <Stat
              label="Calls"
              value={summary.data.calls.toLocaleString("en-US")}
              hint={`${formatTokens(summary.data.prompt_tokens + summary.data.completion_tokens)} tokens, ${summary.data.errors} errors`}
            />
            <Stat
              label="Cache hit rate"
              value={formatPercent(summary.data.cache_hit_rate)}
              hint={`${summary.data.cache_hits} cache hits`}
            />
            <Stat
              label="Saved by cache"
              value={formatUsd(summary.data.saved_by_cache_usd)}
              hint="what the cache hits would have cost"
            />
          </div>
        )}
      </section>
      <section aria-label="Executions" className="grid gap-4 lg:grid-cols-3">
        <Card>
          <CardTitle>Executions today</CardTitle>
          <Empty>No executions yet: they come with the agents API.</Empty>
        </Card>
        <Card>
          <CardTitle>Executions this month</CardTitle>
          <Empty>No executions yet: they come with the agents API.</Empty>
        </Card>
        <Card>
          <CardTitle>Recent executions</CardTitle>
          <Empty>No executions yet: they come with the agents API.</Empty>
        </Card>
      </section>
    </div>
  );
}
