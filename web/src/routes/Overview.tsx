import { StateBadge } from "@/components/Executions/StateBadge";
import { PendingInvitations } from "@/components/Invitations/PendingInvitations";
import { ProviderHealth } from "@/components/Overview/ProviderHealth";
import { Card, CardTitle, Stat } from "@/components/ui/card";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { useExecutions } from "@/hooks/queries/executions";
import { useUsageSummary } from "@/hooks/queries/usage";
import { formatDateTime, formatPercent, formatTokens, formatUsd, monthWindow } from "@/lib/format";
import { can } from "@/lib/permissions";
import { Link } from "react-router-dom";

export function Overview() {
  const { data: me } = useMe();
  const mayReadUsage = can(me, "usage:read");
  const window = monthWindow();
  const summary = useUsageSummary(window, { enabled: mayReadUsage && !!me?.tenant_id });

  return (
    <div>
      <PageHeader title="Overview" />
      <PendingInvitations />
      <section aria-label="Gateway this month" className="mb-8">
        <h2 className="mb-3 text-sm font-semibold uppercase text-slate-500">
          Gateway, this month (UTC)
        </h2>
        {me?.tenant_id === null && !me.is_super_admin ? (
          <Empty>
            You belong to no tenant yet: accept an invitation above, then sign out and sign in to
            that tenant.
          </Empty>
        ) : me?.tenant_id === null ? (
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
      {me?.tenant_id ? <ExecutionsSection /> : null}
      <ProviderHealth />
    </div>
  );
}

function startOfTodayUtc(now: Date = new Date()): string {
  return new Date(
    Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()),
  ).toISOString();
}

/** Executions today and this month (UTC), and the latest few. */
function ExecutionsSection() {
  const month = monthWindow();
  // limit 1: only the totals are wanted from these two.
  const today = useExecutions({ from: startOfTodayUtc() }, { limit: 1 });
  const thisMonth = useExecutions({ from: month.from, to: month.to }, { limit: 1 });
  const recent = useExecutions({}, { limit: 5 });
  const total = (query: typeof today) =>
    query.isPending ? "…" : query.isError ? "—" : query.data.total.toLocaleString("en-US");
  return (
    <section aria-label="Executions" className="mb-8 grid gap-4 lg:grid-cols-4">
      <Stat label="Executions today" value={total(today)} />
      <Stat label="Executions this month" value={total(thisMonth)} />
      <Card className="lg:col-span-2">
        <CardTitle>Recent executions</CardTitle>
        {recent.isPending ? (
          <Loading what="Loading executions" />
        ) : recent.isError ? (
          <ErrorState error={recent.error} />
        ) : recent.data.items.length === 0 ? (
          <Empty>
            No executions yet:{" "}
            <Link to="/run" className="underline">
              run an agent
            </Link>
            .
          </Empty>
        ) : (
          <ul className="divide-y divide-slate-100 text-sm">
            {recent.data.items.map((execution) => (
              <li key={execution.id} className="flex items-center gap-3 py-2">
                <StateBadge state={execution.state} />
                <Link to={`/executions/${execution.id}`} className="flex-1 truncate underline">
                  {execution.task}
                </Link>
                <span className="text-slate-500">{formatUsd(execution.cost_usd)}</span>
                <span className="text-slate-400">{formatDateTime(execution.created_at)}</span>
              </li>
            ))}
          </ul>
        )}
      </Card>
    </section>
  );
}
