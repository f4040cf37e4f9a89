import { type Schemas, api, errorMessage, toApiError } from "@/api/client";
import { Button } from "@/components/ui/button";
import { Card, CardTitle, Stat } from "@/components/ui/card";
import { Input, Label, Select } from "@/components/ui/input";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { useAllAgents } from "@/hooks/queries/agents";
import { useAllApiKeys } from "@/hooks/queries/apiKeys";
import { useMe } from "@/hooks/queries/auth";
import { useLimits } from "@/hooks/queries/limits";
import {
  type UsageWindow,
  exportCsvPath,
  useUsageSeries,
  useUsageSummary,
} from "@/hooks/queries/usage";
import { budgetUsage, formatPercent, formatTokens, formatUsd, monthWindow } from "@/lib/format";
import { can } from "@/lib/permissions";
import { type Metric, NONE_KEY, pivotByDay } from "@/lib/series";
import { useMemo, useState } from "react";
import {
  Bar,
  BarChart,
  CartesianGrid,
  Legend,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";

const COLORS = ["#0f172a", "#f59e0b", "#10b981", "#6366f1", "#ef4444", "#06b6d4", "#a855f7"];
const DIMENSIONS: { value: Schemas["UsageDimension"]; label: string }[] = [
  { value: "model", label: "Model" },
  { value: "provider", label: "Provider" },
  { value: "route", label: "Route" },
  { value: "api_key", label: "API key" },
  { value: "agent", label: "Agent" },
];

function lastMonth(): UsageWindow {
  const now = new Date();
  return monthWindow(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 15)));
}

export function Analytics() {
  const { data: me } = useMe();
  const [range, setRange] = useState<"this" | "last">("this");
  const window = useMemo(() => (range === "this" ? monthWindow() : lastMonth()), [range]);
  const [groupBy, setGroupBy] = useState<Schemas["UsageDimension"]>("model");
  const [metric, setMetric] = useState<Metric>("cost_usd");
  const [baselineInput, setBaselineInput] = useState("");
  const [baseline, setBaseline] = useState<string | undefined>(undefined);

  const summary = useUsageSummary(window, baseline ? { baseline } : {});
  const series = useUsageSeries(window, groupBy, true);
  const totals = useUsageSeries(window, groupBy, false);
  const limits = useLimits();
  const keys = useAllApiKeys();
  const agents = useAllAgents();
  // API keys and agents are grouped by id: show their names where the caller may see them.
  const names = useMemo(() => {
    const found = new Map<string, string>();
    if (can(me, "api_keys:read"))
      for (const key of keys.data?.items ?? []) found.set(key.id, key.name);
    for (const agent of agents.data?.items ?? []) found.set(agent.id, agent.name);
    return found;
  }, [keys.data, agents.data, me]);
  const byId = groupBy === "api_key" || groupBy === "agent";
  const label = (key: string | null) =>
    key === null ? NONE_KEY : byId ? (names.get(key) ?? key.slice(0, 8)) : key;

  return (
    <div>
      <PageHeader title="Cost analytics" actions={<CsvExport window={window} />} />
      <div className="mb-6 flex flex-wrap items-end gap-4">
        <div>
          <Label htmlFor="range">Period</Label>
          <Select
            id="range"
            value={range}
            onChange={(e) => setRange(e.target.value as "this" | "last")}
          >
            <option value="this">This month</option>
            <option value="last">Last month</option>
          </Select>
        </div>
        <div>
          <Label htmlFor="group-by">Group by</Label>
          <Select
            id="group-by"
            value={groupBy}
            onChange={(e) => setGroupBy(e.target.value as Schemas["UsageDimension"])}
          >
            {DIMENSIONS.map((d) => (
              <option key={d.value} value={d.value}>
                {d.label}
              </option>
            ))}
          </Select>
        </div>
        <div>
          <Label htmlFor="metric">Show</Label>
          <Select id="metric" value={metric} onChange={(e) => setMetric(e.target.value as Metric)}>
            <option value="cost_usd">Spend (USD)</option>
            <option value="tokens">Tokens</option>
          </Select>
        </div>
      </div>

      {summary.isPending ? (
        <Loading what="Loading usage" />
      ) : summary.isError ? (
        <ErrorState error={summary.error} />
      ) : (
        <div className="mb-6 grid grid-cols-2 gap-4 lg:grid-cols-4">
          <Stat label="Spend" value={formatUsd(summary.data.cost_usd)} />
          <Stat label="Calls" value={summary.data.calls.toLocaleString("en-US")} />
          <Stat
            label="Tokens"
            value={formatTokens(summary.data.prompt_tokens + summary.data.completion_tokens)}
          />
          <Stat label="Saved by cache" value={formatUsd(summary.data.saved_by_cache_usd)} />
        </div>
      )}

      <div className="mb-6 grid gap-4 lg:grid-cols-2">
        <Card>
          <CardTitle>Budget this month</CardTitle>
          {range === "this" ? (
            <BudgetBar
              spent={summary.data?.cost_usd}
              limits={limits.data}
              error={limits.error ?? summary.error}
            />
          ) : (
            <p className="text-sm text-slate-500">
              The budget is per calendar month: choose this month to see it.
            </p>
          )}
        </Card>
        <Card>
          <CardTitle>Savings against a baseline model</CardTitle>
          <form
            className="mb-3 flex gap-2"
            onSubmit={(event) => {
              event.preventDefault();
              setBaseline(baselineInput.trim() || undefined);
            }}
          >
            <Input
              aria-label="Baseline model"
              placeholder="e.g. gpt-4o or openai/gpt-4o"
              value={baselineInput}
              onChange={(e) => setBaselineInput(e.target.value)}
            />
            <Button type="submit" variant="secondary">
              Compare
            </Button>
          </form>
          {summary.data?.baseline ? (
            <dl className="grid grid-cols-2 gap-2 text-sm">
              <dt className="text-slate-500">On {summary.data.baseline.model}</dt>
              <dd>{formatUsd(summary.data.baseline.cost_usd)}</dd>
              <dt className="text-slate-500">Actual</dt>
              <dd>{formatUsd(summary.data.baseline.actual_cost_usd)}</dd>
              <dt className="text-slate-500">Saved by caching</dt>
              <dd>{formatUsd(summary.data.baseline.cache_savings_usd)}</dd>
              <dt className="text-slate-500">Saved by routing</dt>
              <dd>{formatUsd(summary.data.baseline.routing_savings_usd)}</dd>
              <dt className="font-medium">Total saved</dt>
              <dd className="font-medium">{formatUsd(summary.data.baseline.savings_usd)}</dd>
            </dl>
          ) : (
            <p className="text-sm text-slate-500">
              Name a model to see what these calls would have cost on it.
            </p>
          )}
        </Card>
      </div>

      <Card className="mb-6">
        <CardTitle>
          {metric === "tokens" ? "Tokens" : "Spend"} per day by{" "}
          {DIMENSIONS.find((d) => d.value === groupBy)?.label.toLowerCase()}
        </CardTitle>
        {series.isPending ? (
          <Loading />
        ) : series.isError ? (
          <ErrorState error={series.error} />
        ) : series.data.rows.length === 0 ? (
          <Empty>No model calls in this period yet.</Empty>
        ) : (
          <SeriesChart rows={series.data.rows} metric={metric} label={label} />
        )}
      </Card>

      <Card>
        <CardTitle>Totals</CardTitle>
        {totals.isPending ? (
          <Loading />
        ) : totals.isError ? (
          <ErrorState error={totals.error} />
        ) : totals.data.rows.length === 0 ? (
          <Empty>No model calls in this period yet.</Empty>
        ) : (
          <Table aria-label="Usage totals">
            <thead>
              <tr>
                <Th>{DIMENSIONS.find((d) => d.value === groupBy)?.label}</Th>
                <Th>Calls</Th>
                <Th>Tokens</Th>
                <Th>Cache hit rate</Th>
                <Th>Spend</Th>
              </tr>
            </thead>
            <tbody>
              {totals.data.rows.map((row) => (
                <tr key={row.key ?? NONE_KEY}>
                  <Td>{label(row.key)}</Td>
                  <Td>{row.calls}</Td>
                  <Td>{formatTokens(row.prompt_tokens + row.completion_tokens)}</Td>
                  <Td>{formatPercent(row.cache_hit_rate)}</Td>
                  <Td>{formatUsd(row.cost_usd)}</Td>
                </tr>
              ))}
            </tbody>
          </Table>
        )}
      </Card>
    </div>
  );
}

function SeriesChart({
  rows,
  metric,
  label,
}: {
  rows: Schemas["UsageSeriesRow"][];
  metric: Metric;
  label: (key: string | null) => string;
}) {
  const { points, keys } = pivotByDay(rows, metric, label);
  const format = metric === "tokens" ? formatTokens : formatUsd;
  return (
    <div className="h-72">
      <ResponsiveContainer width="100%" height="100%">
        <BarChart data={points}>
          <CartesianGrid strokeDasharray="3 3" vertical={false} />
          <XAxis dataKey="day" fontSize={12} />
          <YAxis fontSize={12} tickFormatter={(v: number) => format(v)} width={80} />
          <Tooltip formatter={(v: number) => format(v)} />
          <Legend />
          {keys.map((key, i) => (
            <Bar
              key={key}
              dataKey={key}
              stackId="a"
              fill={COLORS[i % COLORS.length]}
              isAnimationActive={false}
            />
          ))}
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
}

function BudgetBar({
  spent,
  limits,
  error,
}: {
  spent: number | undefined;
  limits: Schemas["Limits"] | undefined;
  error: unknown;
}) {
  if (error) return <ErrorState error={error} />;
  if (!limits || spent === undefined) return <Loading />;
  const ratio = budgetUsage(spent, limits.monthly_budget_usd);
  if (ratio === null || limits.monthly_budget_usd === null) {
    return (
      <p className="text-sm text-slate-500">No monthly budget set ({formatUsd(spent)} spent).</p>
    );
  }
  const warn = ratio >= limits.soft_limit_ratio;
  return (
    <div>
      <div className="mb-2 text-sm" data-testid="budget-usage">
        {formatUsd(spent)} of {formatUsd(limits.monthly_budget_usd)} ({formatPercent(ratio)})
      </div>
      <div className="h-3 w-full rounded-full bg-slate-100">
        <div
          className={warn ? "h-3 rounded-full bg-amber-500" : "h-3 rounded-full bg-green-600"}
          style={{ width: `${ratio * 100}%` }}
        />
      </div>
    </div>
  );
}

/** The export needs the session's bearer token, so it is fetched, then saved as a file. */
function CsvExport({ window }: { window: UsageWindow }) {
  const [error, setError] = useState<string | null>(null);
  const download = async () => {
    setError(null);
    try {
      const { response } = await api.GET("/api/v1/usage/export.csv", {
        params: { query: { from: window.from, to: window.to } },
        parseAs: "stream",
      });
      if (!response.ok) throw toApiError(response.status, await response.json().catch(() => null));
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `apiary-usage-${window.from.slice(0, 7)}.csv`;
      link.click();
      URL.revokeObjectURL(link.href);
    } catch (problem) {
      setError(errorMessage(problem));
    }
  };
  return (
    <div className="flex items-center gap-3">
      {error ? <span className="text-sm text-red-700">{error}</span> : null}
      <Button variant="secondary" onClick={download} data-href={exportCsvPath(window)}>
        Export CSV
      </Button>
    </div>
  );
}
