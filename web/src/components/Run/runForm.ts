// The run form's options, checked and turned into the body of POST /api/v1/executions.
import type { Schemas } from "@/api/client";

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
  if (task.length > 50_000) return { body: null, error: "Task: at most 50,000 characters" };
  const maxAgents = optional(form.maxAgents, (v) => Number.isInteger(v) && v >= 1 && v <= 100);
  if (Number.isNaN(maxAgents)) return { body: null, error: "Max agents: a whole number, 1–100" };
  const budget = optional(form.budgetUsd, (v) => v > 0);
  if (Number.isNaN(budget)) return { body: null, error: "Budget: a positive amount in USD" };
  const deadline = optional(form.deadlineS, (v) => v > 0 && v <= 86_400);
  if (Number.isNaN(deadline)) return { body: null, error: "Deadline: seconds, up to 86400" };
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
