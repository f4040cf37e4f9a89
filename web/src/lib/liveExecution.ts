// The live view of one execution, folded from its events. Each event's data is typed by the
// generated API schema (`ExecutionEvent` is a union on `type`). Pure: the hook in
// hooks/useExecutionEvents.ts feeds it.
import type { Schemas } from "@/api/client";
import { enums } from "@/api/constraints";
import { formatSeconds } from "@/lib/figures";

export type ExecutionEvent = Schemas["ExecutionEvent"];
export type ExecutionState = Schemas["ExecutionState"];

/** A sub-agent's status as stored, or `retrying` between two attempts. */
export type SubagentStatus = Schemas["SubtaskStatus"] | "retrying";

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
  state: ExecutionState;
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

/** The final states, as the server's schema lists them (its `done` event's state). */
export const FINISHED_STATES: readonly ExecutionState[] = enums.FinishedExecutionState;

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

function updateSubagent(
  live: LiveExecution,
  index: number,
  change: (subagent: SubagentView) => Partial<SubagentView>,
): SubagentView[] {
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
  const next: LiveExecution = { ...live, lastSeq: event.seq, events: [...live.events, event] };
  switch (event.type) {
    case "state":
      return { ...next, state: event.data.state };
    case "subtasks_planned":
      return {
        ...next,
        subagents: event.data.subtasks.map((prompt, index) =>
          live.subagents[index]
            ? { ...live.subagents[index], prompt }
            : pendingSubagent(index, prompt),
        ),
      };
    case "subagent_started": {
      const { prompt } = event.data;
      return {
        ...next,
        subagents: updateSubagent(live, event.data.subtask, (s) => ({
          status: "running",
          prompt: s.prompt || prompt,
        })),
      };
    }
    case "subagent_retry": {
      const { error } = event.data;
      return {
        ...next,
        subagents: updateSubagent(live, event.data.subtask, () => ({
          status: "retrying",
          error: error || null,
          output: "", // the next attempt writes its answer afresh
        })),
      };
    }
    case "tool_call": {
      const { tool, output } = event.data;
      return {
        ...next,
        subagents: updateSubagent(live, event.data.subtask, (s) => ({
          toolCalls: [...s.toolCalls, { tool, output }],
        })),
      };
    }
    case "subagent_finished": {
      const data = event.data;
      return {
        ...next,
        spentUsd: Math.max(live.spentUsd, data.spent_usd),
        subagents: updateSubagent(live, data.subtask, () => ({
          status: data.status,
          costUsd: data.cost_usd,
          seconds: data.seconds,
          error: data.error || null,
        })),
      };
    }
    case "token": {
      // With a sub-agent's index: that sub-agent's answer streaming; without: the synthesis.
      const { subtask, text } = event.data;
      if (typeof subtask === "number") {
        return {
          ...next,
          subagents: updateSubagent(live, subtask, (s) => ({ output: s.output + text })),
        };
      }
      return { ...next, synthesis: live.synthesis + text };
    }
    case "decomposition_degraded":
      return { ...next, notes: [...live.notes, `Ran as one sub-agent: ${event.data.reason}`] };
    case "resumed":
      return { ...next, notes: [...live.notes, "A worker resumed this execution."] };
    case "done":
      return {
        ...next,
        done: true,
        state: event.data.state,
        answer: event.data.answer,
        error: event.data.error || null,
        spentUsd: event.data.cost_usd,
      };
    default:
      return next; // an event type this dashboard does not know yet (a newer server)
  }
}

/** The sub-agent an event is about, in words ("" for the run's own events). */
function subagentOf(event: ExecutionEvent): string {
  const subtask = "subtask" in event.data ? event.data.subtask : null;
  return typeof subtask === "number" ? `sub-agent ${subtask + 1}` : "";
}

/** A one-line description of an event, for the timeline. */
export function describeEvent(event: ExecutionEvent): string {
  const which = subagentOf(event);
  switch (event.type) {
    case "state":
      return `state: ${event.data.state}`;
    case "subtasks_planned":
      return `planned ${event.data.subtasks.length} subtasks`;
    case "subagent_started":
      return `${which} started`;
    case "subagent_retry":
      return `${which} retried after: ${event.data.error}`;
    case "tool_call":
      return `${which} called ${event.data.tool}`;
    case "subagent_finished":
      return `${which} ${event.data.status} in ${formatSeconds(event.data.seconds)}`;
    case "token":
      return which ? `${which} writing` : "synthesis tokens";
    case "done":
      return `done: ${event.data.state}`;
    default:
      return event.type.replace(/_/g, " ");
  }
}
