import type { Schemas } from "@/api/client";
import { Card } from "@/components/ui/card";
import { formatSeconds } from "@/lib/figures";
import { formatTokens, formatUsd } from "@/lib/format";
import type { SubagentView } from "@/lib/liveExecution";
import { StateBadge } from "./StateBadge";

/**
 * One sub-agent: its prompt and state from the live events, its tool calls and its answer
 * as they stream in, then the stored answer, tokens and model once it has finished.
 */
export function SubagentCard({
  live,
  stored,
}: {
  live: SubagentView | undefined;
  stored: Schemas["Subtask"] | undefined;
}) {
  const index = live?.index ?? stored?.index ?? 0;
  const status = live && live.status !== "pending" ? live.status : (stored?.status ?? "pending");
  // A running sub-agent's stored cost is a placeholder 0: show one once it has finished.
  const cost = stored?.finished_at ? stored.cost_usd : (live?.costUsd ?? null);
  const seconds = live?.seconds ?? null;
  const error = live?.error ?? stored?.error ?? null;
  return (
    <Card className="flex flex-col gap-2 p-4" data-testid={`subagent-${index}`}>
      <div className="flex items-center justify-between gap-2">
        <span className="text-sm font-semibold">Sub-agent {index + 1}</span>
        <StateBadge state={status} />
      </div>
      <p className="text-sm text-slate-600">{live?.prompt || stored?.prompt}</p>
      {live?.toolCalls.length ? (
        <ul className="space-y-1 text-xs">
          {live.toolCalls.map((call, i) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: calls are only ever appended
            <li key={i} className="rounded bg-slate-50 p-1 font-mono">
              {call.tool} → {call.output.slice(0, 200)}
            </li>
          ))}
        </ul>
      ) : null}
      {stored?.result || live?.output ? (
        <p className="max-h-40 overflow-y-auto whitespace-pre-wrap rounded bg-slate-50 p-2 text-sm">
          {stored?.result || live?.output}
        </p>
      ) : status === "running" || status === "retrying" ? (
        <p className="animate-pulse text-sm text-slate-400">working…</p>
      ) : null}
      {error ? <p className="text-xs text-red-700">{error}</p> : null}
      <div className="mt-auto flex flex-wrap gap-x-3 text-xs text-slate-500">
        {stored && stored.prompt_tokens + stored.completion_tokens > 0 ? (
          <span>{formatTokens(stored.prompt_tokens + stored.completion_tokens)} tokens</span>
        ) : null}
        {cost !== null ? <span>{formatUsd(cost)}</span> : null}
        {seconds !== null ? <span>{formatSeconds(seconds)}</span> : null}
        {stored?.model ? <span>{stored.model}</span> : null}
        {stored && stored.attempts > 1 ? <span>{stored.attempts} attempts</span> : null}
      </div>
    </Card>
  );
}
