import { type ExecutionEvent, describeEvent } from "@/lib/liveExecution";

function clock(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().slice(11, 23);
}

const isSubagentText = (event: ExecutionEvent | undefined): boolean =>
  event?.type === "token" && typeof event.data.subtask === "number";

/**
 * Every event in order, except the sub-agents' streamed text (their cards show it); the
 * synthesis's many token events are folded into one line.
 */
export function Timeline({ events }: { events: ExecutionEvent[] }) {
  const steps = events.filter((event) => !isSubagentText(event));
  const shown = steps.filter(
    (event, i) => event.type !== "token" || steps[i - 1]?.type !== "token",
  );
  if (shown.length === 0) return <p className="text-sm text-slate-500">No events yet.</p>;
  return (
    <ol className="space-y-1 text-sm" aria-label="Timeline">
      {shown.map((event) => (
        <li key={event.seq} className="flex gap-3">
          <span className="w-8 shrink-0 text-right text-slate-400">{event.seq}</span>
          <span className="w-28 shrink-0 font-mono text-xs leading-5 text-slate-500">
            {clock(event.created_at)}
          </span>
          <span>{describeEvent(event)}</span>
        </li>
      ))}
    </ol>
  );
}
