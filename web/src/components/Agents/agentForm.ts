// The agent form's state, its validation, and the request body it becomes. The server
// checks everything again; this catches what a person can fix before sending.
import type { Schemas } from "@/api/client";
import { constraints } from "@/api/constraints";

type Agent = Schemas["Agent"];

/** A tool's name as a label: "knowledge_search" → "Knowledge search". */
export function toolLabel(name: string): string {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export interface AgentFormState {
  name: string;
  description: string;
  systemPrompt: string;
  model: string;
  temperature: string;
  tools: string[];
  knowledgeBaseIds: string[];
  maxSubagents: string;
  maxCostUsd: string;
  timeoutS: string;
}

export function formFromAgent(agent?: Agent): AgentFormState {
  return {
    name: agent?.name ?? "",
    description: agent?.description ?? "",
    systemPrompt: agent?.system_prompt ?? "",
    model: agent?.model ?? "default",
    temperature: String(agent?.temperature ?? 0.2),
    tools: [...(agent?.tools ?? [])],
    knowledgeBaseIds: [...(agent?.knowledge_base_ids ?? [])],
    maxSubagents: String(agent?.max_subagents ?? 5),
    maxCostUsd: agent?.max_cost_usd == null ? "" : String(agent.max_cost_usd),
    timeoutS: String(agent?.timeout_s ?? 300),
  };
}

// The server's rules for each field, from the spec (see scripts/constraints.mjs).
const RULES = constraints.AgentCreate;
const NAME = new RegExp(RULES.name.pattern);

type Checked = { body: Schemas["AgentCreate"]; error: null } | { body: null; error: string };

function inRange(text: string, min: number, max: number, integer: boolean): number | null {
  if (text.trim() === "") return null;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min || value > max) return null;
  if (integer && !Number.isInteger(value)) return null;
  return value;
}

/** The create body, or the first thing wrong with the form. */
export function checkAgentForm(form: AgentFormState): Checked {
  const name = form.name.trim();
  if (!NAME.test(name) || name.length > RULES.name.maxLength) {
    return {
      body: null,
      error: "Name: start with a letter or digit; then letters, digits, spaces, . _ -",
    };
  }
  if (!form.model.trim()) return { body: null, error: "Model: required" };
  const { minimum: tMin, maximum: tMax } = RULES.temperature;
  const temperature = inRange(form.temperature, tMin, tMax, false);
  if (temperature === null) {
    return { body: null, error: `Temperature: a number from ${tMin} to ${tMax}` };
  }
  const { minimum: sMin, maximum: sMax } = RULES.max_subagents;
  const maxSubagents = inRange(form.maxSubagents, sMin, sMax, true);
  if (maxSubagents === null) {
    return { body: null, error: `Max sub-agents: a whole number from ${sMin} to ${sMax}` };
  }
  const { minimum: oMin, maximum: oMax } = RULES.timeout_s;
  const timeout = inRange(form.timeoutS, oMin, oMax, true);
  if (timeout === null) {
    return { body: null, error: `Timeout: whole seconds, ${oMin} to ${oMax}` };
  }
  let maxCost: number | null = null;
  if (form.maxCostUsd.trim() !== "") {
    maxCost = Number(form.maxCostUsd);
    if (!Number.isFinite(maxCost) || maxCost <= RULES.max_cost_usd.exclusiveMinimum) {
      return { body: null, error: "Cost cap: a positive amount, or empty for none" };
    }
  }
  if (form.tools.includes("knowledge_search") && form.knowledgeBaseIds.length === 0) {
    return { body: null, error: "Knowledge search needs at least one knowledge base" };
  }
  return {
    error: null,
    body: {
      name,
      description: form.description,
      system_prompt: form.systemPrompt,
      model: form.model.trim(),
      temperature,
      tools: form.tools,
      knowledge_base_ids: form.knowledgeBaseIds,
      max_subagents: maxSubagents,
      max_cost_usd: maxCost,
      timeout_s: timeout,
    },
  };
}

/** Toggle `value` in a list (a checkbox group). */
export function toggle(list: string[], value: string, on: boolean): string[] {
  return on ? [...new Set([...list, value])] : list.filter((item) => item !== value);
}
