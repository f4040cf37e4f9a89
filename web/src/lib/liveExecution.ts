// The live view of one execution, folded from its events (see apiary/swarm/engine.py for
// what each event carries). Pure: the hook in hooks/useExecutionEvents.ts feeds it.
import type { Schemas } from "@/api/client";
import { formatSeconds } from "@/lib/figures";

export type ExecutionEvent = Schemas["ExecutionEvent"];

export type SubagentStatus =
  | "pending"
  | "running"
  | "retrying"
  | "succeeded"
  | "failed"
  | "skipped"
  | "cancelled";

export interface SubagentView {
  index: number;
  prompt: string;
  status: SubagentStatus;
  costUsd: number | null;
  seconds: number | null;
  error: string | null;
  /** Tool calls as they happen. */
  toolCalls: { tool: string; output: string }[];
  /** Its answer as the tokens stream in (the stored result replaces it when it ends). */
  output: string;
}

export interface LiveExecution {
  lastSeq: number;
  state: string;
  subagents: SubagentView[];
  /** The synthesis as its tokens stream in. */
  synthesis: string;
  answer: string | null;
  error: string | null;
  /** Spent so far, from the sub-agents' reports; the final figure when done. */
  spentUsd: number;
  done: boolean;
  notes: string[];
  events: ExecutionEvent[];
}

export const FINISHED_STATES = [
  "succeeded",
  "failed",
  "cancelled",
  "budget_exceeded",
  "timed_out",
] as const;

export function isFinished(state: string): boolean {
  return (FINISHED_STATES as readonly string[]).includes(state);
}

export const initialLive: LiveExecution = {
  lastSeq: 0,
  state: "queued",
  subagents: [],
  synthesis: "",
  answer: null,
  error: null,
  spentUsd: 0,
  done: false,
  notes: [],
  events: [],
};

const str = (value: unknown): string => (typeof value === "string" ? value : "");
const num = (value: unknown): number | null => (typeof value === "number" ? value : null);

function updateSubagent(
  live: LiveExecution,
  index: unknown,
  change: (subagent: SubagentView) => Partial<SubagentView>,
): SubagentView[] {
  if (typeof index !== "number") return live.subagents;
  const subagents = [...live.subagents];
  // A sub-agent may report before the plan was seen (a stream resumed mid-run).
  while (subagents.length <= index) subagents.push(pendingSubagent(subagents.length, ""));
  const current = subagents[index] as SubagentView;
  subagents[index] = { ...current, ...change(current) };
  return subagents;
}

function pendingSubagent(index: number, prompt: string): SubagentView {
  return {
    index,
    prompt,
    status: "pending",
    costUsd: null,
    seconds: null,
    error: null,
    toolCalls: [],
    output: "",
  };
}

/** One event applied; events at or before `lastSeq` (a replay after a reconnect) are skipped. */
export function applyEvent(live: LiveExecution, event: ExecutionEvent): LiveExecution {
  if (event.seq <= live.lastSeq) return live;
  const data = event.data;
  const next: LiveExecution = { ...live, lastSeq: event.seq, events: [...live.events, event] };
  switch (event.type) {
    case "state":
      return { ...next, state: str(data.state) || live.state };
    case "subtasks_planned": {
      const prompts = Array.isArray(data.subtasks) ? data.subtasks.map(str) : [];
      return {
        ...next,
        subagents: prompts.map((prompt, index) =>
          live.subagents[index]
            ? { ...live.subagents[index], prompt }
            : pendingSubagent(index, prompt),
        ),
      };
    }
    case "subagent_started":
      return {
        ...next,
        subagents: updateSubagent(live, data.subtask, (s) => ({
          status: "running",
          prompt: s.prompt || str(data.prompt),
        })),
      };
    case "subagent_retry":
      return {
        ...next,
        subagents: updateSubagent(live, data.subtask, () => ({
          status: "retrying",
          error: str(data.error) || null,
          output: "", // the next attempt writes its answer afresh
        })),
      };
    case "tool_call":
      return {
        ...next,
        subagents: updateSubagent(live, data.subtask, (s) => ({
          toolCalls: [...s.toolCalls, { tool: str(data.tool), output: str(data.output) }],
        })),
      };
    case "subagent_finished":
      return {
        ...next,
        spentUsd: Math.max(live.spentUsd, num(data.spent_usd) ?? 0),
        subagents: updateSubagent(live, data.subtask, () => ({
          status: (str(data.status) || "failed") as SubagentStatus,
          costUsd: num(data.cost_usd),
          seconds: num(data.seconds),
          error: str(data.error) || null,
        })),
      };
    case "token":
      // With a sub-agent's index: that sub-agent's answer streaming; without: the synthesis.
      if (typeof data.subtask === "number") {
        return {
          ...next,
          subagents: updateSubagent(live, data.subtask, (s) => ({
            output: s.output + str(data.text),
          })),
        };
      }
      return { ...next, synthesis: live.synthesis + str(data.text) };
    case "decomposition_degraded":
      return { ...next, notes: [...live.notes, `Ran as one sub-agent: ${str(data.reason)}`] };
    case "resumed":
      return { ...next, notes: [...live.notes, "A worker resumed this execution."] };
    case "done":
      return {
        ...next,
        done: true,
        state: str(data.state) || live.state,
        answer: typeof data.answer === "string" ? data.answer : null,
        error: str(data.error) || null,
        spentUsd: num(data.cost_usd) ?? live.spentUsd,
      };
    default:
      return next;
  }
}

/** A one-line description of an event, for the timeline. */
export function describeEvent(event: ExecutionEvent): string {
  const data = event.data;
  const which = typeof data.subtask === "number" ? `sub-agent ${data.subtask + 1}` : "";
  switch (event.type) {
    case "state":
      return `state: ${str(data.state)}`;
    case "subtasks_planned":
      return `planned ${Array.isArray(data.subtasks) ? data.subtasks.length : 0} subtasks`;
    case "subagent_started":
      return `${which} started`;
    case "subagent_retry":
      return `${which} retried after: ${str(data.error)}`;
    case "tool_call":
      return `${which} called ${str(data.tool)}`;
    case "subagent_finished":
      return `${which} ${str(data.status)} in ${formatSeconds(num(data.seconds))}`;
    case "token":
      return which ? `${which} writing` : "synthesis tokens";
    case "done":
      return `done: ${str(data.state)}`;
    default:
      return event.type.replace(/_/g, " ");
  }
}
