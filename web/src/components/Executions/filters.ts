// The history's filter form, as the list endpoint's query: dates are whole UTC days, the
// "to" day included (so the query's exclusive end is the day after).
import type { Schemas } from "@/api/client";
import type { ExecutionFilters } from "@/hooks/queries/executions";

export interface FilterForm {
  agentId: string;
  state: string;
  /** YYYY-MM-DD from a date input, or "". */
  fromDay: string;
  toDay: string;
}

export const noFilters: FilterForm = { agentId: "", state: "", fromDay: "", toDay: "" };

// Keyed by the generated enum, so a state the server adds fails the typecheck until listed.
const STATE_ORDER: Record<Schemas["ExecutionState"], number> = {
  queued: 0,
  decomposing: 1,
  running: 2,
  synthesizing: 3,
  succeeded: 4,
  failed: 5,
  cancelled: 6,
  budget_exceeded: 7,
  timed_out: 8,
};

/** Every execution state, in the order a run moves through them. */
export const EXECUTION_STATES = (Object.keys(STATE_ORDER) as Schemas["ExecutionState"][]).sort(
  (a, b) => STATE_ORDER[a] - STATE_ORDER[b],
);

function utcDay(day: string, plusDays = 0): string | undefined {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  if (!match) return undefined;
  const date = new Date(
    Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3]) + plusDays),
  );
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

export function toQuery(form: FilterForm): ExecutionFilters {
  return {
    agentId: form.agentId || undefined,
    state: (form.state || undefined) as Schemas["ExecutionState"] | undefined,
    from: utcDay(form.fromDay),
    to: utcDay(form.toDay, 1),
  };
}
