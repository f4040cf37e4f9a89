// The run form's options, checked and turned into the body of POST /api/v1/executions.
import type { Schemas } from "@/api/client";
import { constraints } from "@/api/constraints";

// The server's rules for the run's options, from the spec (see scripts/constraints.mjs).
const OPTIONS = constraints.ExecutionOptions;

export interface RunFormState {
  agentId: string;
  task: string;
  maxAgents: string;
  budgetUsd: string;
  deadlineS: string;
  mode: "swarm" | "single";
}

export const emptyRunForm: RunFormState = {
  agentId: "",
  task: "",
  maxAgents: "",
  budgetUsd: "",
  deadlineS: "",
  mode: "swarm",
};

type Checked = { body: Schemas["ExecutionCreate"]; error: null } | { body: null; error: string };

/** An optional number: undefined when empty, NaN when not a number within the bounds. */
function optional(text: string, ok: (value: number) => boolean): number | undefined {
  if (text.trim() === "") return undefined;
  const value = Number(text);
  return Number.isFinite(value) && ok(value) ? value : Number.NaN;
}

export function checkRunForm(form: RunFormState): Checked {
  if (!form.agentId) return { body: null, error: "Pick an agent" };
  const task = form.task.trim();
  if (!task) return { body: null, error: "Task: say what the swarm should do" };
  const taskMax = constraints.ExecutionCreate.task.maxLength;
  if (task.length > taskMax) {
    return { body: null, error: `Task: at most ${taskMax.toLocaleString("en")} characters` };
  }
  const { max_agents: agents, budget_usd: budgetRule, deadline_s: deadlineRule } = OPTIONS;
  const maxAgents = optional(
    form.maxAgents,
    (v) => Number.isInteger(v) && v >= agents.minimum && v <= agents.maximum,
  );
  if (Number.isNaN(maxAgents)) {
    return {
      body: null,
      error: `Max agents: a whole number, ${agents.minimum}–${agents.maximum}`,
    };
  }
  const budget = optional(form.budgetUsd, (v) => v > budgetRule.exclusiveMinimum);
  if (Number.isNaN(budget)) return { body: null, error: "Budget: a positive amount in USD" };
  const deadline = optional(
    form.deadlineS,
    (v) => v > deadlineRule.exclusiveMinimum && v <= deadlineRule.maximum,
  );
  if (Number.isNaN(deadline)) {
    return { body: null, error: `Deadline: seconds, up to ${deadlineRule.maximum}` };
  }
  return {
    error: null,
    body: {
      agent_id: form.agentId,
      task,
      options: {
        mode: form.mode,
        max_agents: form.mode === "single" ? undefined : maxAgents,
        budget_usd: budget,
        deadline_s: deadline,
      },
    },
  };
}
