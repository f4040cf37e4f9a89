import { Can } from "@/components/Auth/Can";
import { Figures } from "@/components/Executions/Figures";
import { StateBadge } from "@/components/Executions/StateBadge";
import { SubagentCard } from "@/components/Executions/SubagentCard";
import { Timeline } from "@/components/Executions/Timeline";
import { Button } from "@/components/ui/button";
import { Card, CardTitle } from "@/components/ui/card";
import { DataTable } from "@/components/ui/data-table";
import { ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { useAllAgents } from "@/hooks/queries/agents";
import {
  executionKeys,
  useCancelExecution,
  useExecution,
  useExecutionLedger,
} from "@/hooks/queries/executions";
import { useExecutionEvents } from "@/hooks/useExecutionEvents";
import { formatDateTime, formatTokens, formatUsd } from "@/lib/format";
import { isFinished } from "@/lib/liveExecution";
import { useQueryClient } from "@tanstack/react-query";
import { useCallback, useRef, useState } from "react";
import { Link, useParams } from "react-router-dom";

// Events that change what the stored execution says (subtask results, tokens, figures).
const RELOAD_ON = new Set(["state", "subtasks_planned", "subagent_finished", "done"]);

/** An execution, live while it runs: sub-agent cards, synthesis, figures, timeline, ledger. */
export function ExecutionDetail() {
  const { executionId = "" } = useParams();
  const execution = useExecution(executionId);
  const agents = useAllAgents();
  const cancel = useCancelExecution();
  const queryClient = useQueryClient();

  // At most one reload of the stored execution per half second, however fast events come.
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const reload = useCallback(() => {
    if (timer.current) return;
    timer.current = setTimeout(() => {
      timer.current = null;
      void queryClient.invalidateQueries({ queryKey: executionKeys.detail(executionId) });
      void queryClient.invalidateQueries({ queryKey: executionKeys.ledger(executionId) });
    }, 500);
  }, [queryClient, executionId]);
  const { live, error: streamError } = useExecutionEvents(executionId, (events) => {
    if (events.some((event) => RELOAD_ON.has(event.type))) reload();
  });

  const stored = execution.data;
  const state = live.lastSeq > 0 ? live.state : (stored?.state ?? "queued");
  const finished = isFinished(state);
  const [ledgerOffset, setLedgerOffset] = useState(0);
  const ledger = useExecutionLedger(executionId, finished, ledgerOffset);

  if (execution.isPending) return <Loading what="Loading the execution" />;
  if (execution.isError || !stored) return <ErrorState error={execution.error} />;

  const agentName = agents.data?.items.find((a) => a.id === stored.agent_id)?.name;
  const count = Math.max(live.subagents.length, stored.subtasks.length);
  const answer = stored.answer ?? live.answer;
  // The stored figures lag the live events by a reload: until they are final, the events'.
  const storedFinal = isFinished(stored.state);
  const cost = storedFinal ? stored.cost_usd : live.spentUsd;

  return (
    <div className="space-y-6">
      <PageHeader
        title="Execution"
        actions={
          finished ? null : (
            <Can permission="executions:run">
              <Button
                variant="danger"
                disabled={cancel.isPending || stored.cancel_requested}
                onClick={() => cancel.mutate(executionId)}
              >
                {stored.cancel_requested || cancel.isSuccess ? "Cancelling…" : "Cancel"}
              </Button>
            </Can>
          )
        }
      />
      {cancel.isError ? <ErrorState error={cancel.error} /> : null}
      {streamError ? <ErrorState error={streamError} /> : null}
      <Card>
        <div className="flex flex-wrap items-center gap-3">
          <span data-testid="execution-state">
            <StateBadge state={state} />
          </span>
          <span className="text-sm text-slate-500">
            {agentName ? (
              <Link to="/agents" className="underline">
                {agentName}
              </Link>
            ) : (
              "deleted agent"
            )}{" "}
            v{stored.agent_version} · started {formatDateTime(stored.created_at)}
          </span>
          <span className="ml-auto text-sm">
            <span data-testid="execution-cost" className="font-semibold">
              {formatUsd(cost)}
            </span>
            {storedFinal ? (
              <span className="text-slate-500">
                {" "}
                · {formatTokens(stored.prompt_tokens + stored.completion_tokens)} tokens
              </span>
            ) : null}
          </span>
        </div>
        <p className="mt-3 whitespace-pre-wrap">{stored.task}</p>
        {live.notes.map((note) => (
          <p key={note} className="mt-2 text-sm text-amber-800">
            {note}
          </p>
        ))}
      </Card>

      <section aria-label="Sub-agents">
        <h2 className="mb-3 text-sm font-semibold uppercase text-slate-500">
          Decomposition: {count ? `${count} sub-agent${count === 1 ? "" : "s"}` : "planning…"}
        </h2>
        <div className="grid gap-3 md:grid-cols-2 xl:grid-cols-3">
          {Array.from({ length: count }, (_, index) => (
            <SubagentCard
              // biome-ignore lint/suspicious/noArrayIndexKey: a sub-agent is its index
              key={index}
              live={live.subagents[index]}
              stored={stored.subtasks.find((s) => s.index === index)}
            />
          ))}
        </div>
      </section>

      {answer || live.synthesis || stored.error ? (
        <Card>
          <CardTitle>{finished ? "Answer" : "Synthesis"}</CardTitle>
          {stored.error || live.error ? (
            <ErrorState error={new Error(stored.error ?? live.error ?? "")} />
          ) : null}
          <p className="whitespace-pre-wrap" data-testid="execution-answer">
            {answer ?? live.synthesis}
          </p>
          {stored.sources?.length ? (
            <div className="mt-4">
              <h3 className="mb-1 text-sm font-semibold text-slate-600">Sources</h3>
              <ol className="list-decimal space-y-1 pl-5 text-sm">
                {stored.sources.map((source) => (
                  <li key={`${source.document_id}-${source.char_start}`}>
                    {source.filename}
                    {source.page ? `, page ${source.page}` : ""}
                    {source.section ? ` — ${source.section}` : ""}
                    <span className="text-slate-400">
                      {" "}
                      (chars {source.char_start}–{source.char_end})
                    </span>
                  </li>
                ))}
              </ol>
            </div>
          ) : null}
        </Card>
      ) : null}

      {finished ? (
        <section aria-label="Figures">
          <h2 className="mb-3 text-sm font-semibold uppercase text-slate-500">Figures</h2>
          <Figures figures={stored.figures} />
        </section>
      ) : null}

      <div className="space-y-6">
        <Card>
          <CardTitle>Timeline</CardTitle>
          <Timeline events={live.events} />
        </Card>
        <section aria-label="Model calls">
          <h2 className="mb-3 text-sm font-semibold uppercase text-slate-500">Model calls</h2>
          {finished ? (
            <DataTable
              label="Ledger"
              query={ledger}
              paging={{ offset: ledgerOffset, onChange: setLedgerOffset }}
              empty="No model calls were made."
              rowKey={(row) => row.id}
              columns={[
                { header: "When", cell: (row) => row.created_at.slice(11, 23) },
                {
                  header: "Model",
                  className: "whitespace-nowrap",
                  cell: (row) => (
                    <span title={row.fallback_path.join("; ")}>
                      {row.provider ? `${row.provider}/${row.model}` : row.requested_model}
                    </span>
                  ),
                },
                {
                  header: "Tokens",
                  cell: (row) => `${row.prompt_tokens} / ${row.completion_tokens}`,
                },
                {
                  header: "Cost",
                  cell: (row) => (row.cost_usd === null ? "unpriced" : formatUsd(row.cost_usd)),
                },
                { header: "Latency", cell: (row) => `${Math.round(row.latency_ms)} ms` },
                {
                  header: "Status",
                  cell: (row) =>
                    row.cache_hit
                      ? "cache hit"
                      : row.status === "ok"
                        ? "ok"
                        : (row.error ?? "error"),
                },
              ]}
            />
          ) : (
            <p className="text-sm text-slate-500">Listed when the execution ends.</p>
          )}
        </section>
      </div>
    </div>
  );
}
