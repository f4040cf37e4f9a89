// The plan form of the admin panel: its state, its checks, and the create body or the
// update (only what changed) it becomes. Money stays a decimal string, as the API has it.
import type { Schemas } from "@/api/client";
import { constraints } from "@/api/constraints";

type Plan = Schemas["Plan"];

export const LIMITS = [
  { name: "seats", label: "Seats" },
  { name: "max_subagents", label: "Sub-agents per execution" },
  { name: "concurrent_executions", label: "Concurrent executions" },
  { name: "knowledge_bases", label: "Knowledge bases" },
  { name: "storage_bytes", label: "Stored bytes" },
  { name: "requests_per_minute", label: "Requests per minute" },
  { name: "tokens_per_minute", label: "Tokens per minute" },
] as const satisfies readonly { name: keyof Plan; label: string }[];

export const FEATURES = [
  { name: "semantic_cache", label: "Semantic cache" },
  { name: "oidc", label: "Single sign-on (OIDC)" },
  { name: "audit_export", label: "Audit export" },
] as const satisfies readonly { name: keyof Plan; label: string }[];

type LimitName = (typeof LIMITS)[number]["name"];
type FeatureName = (typeof FEATURES)[number]["name"];

export interface PlanFormState {
  key: string;
  name: string;
  description: string;
  monthlyFeeUsd: string;
  includedSpendUsd: string;
  includedTokens: string;
  overage: boolean;
  markupPct: string;
  stripePriceId: string;
  /** Empty: unlimited. */
  limits: Record<LimitName, string>;
  features: Record<FeatureName, boolean>;
}

const text = (value: string | number | null | undefined) =>
  value === null || value === undefined ? "" : String(value);

export function formFromPlan(plan?: Plan): PlanFormState {
  const limits = {} as Record<LimitName, string>;
  for (const { name } of LIMITS) limits[name] = text(plan?.[name]);
  const features = {} as Record<FeatureName, boolean>;
  for (const { name } of FEATURES) features[name] = plan?.[name] ?? false;
  return {
    key: plan?.key ?? "",
    name: plan?.name ?? "",
    description: plan?.description ?? "",
    monthlyFeeUsd: plan?.monthly_fee_usd ?? "0.00",
    includedSpendUsd: text(plan?.included_spend_usd),
    includedTokens: text(plan?.included_tokens),
    overage: plan?.overage ?? true,
    markupPct: plan?.markup_pct ?? "0",
    stripePriceId: plan?.stripe_price_id ?? "",
    limits,
    features,
  };
}

type Fields = Omit<Schemas["PlanCreate"], "key">;
type Checked<T> = { body: T; error: null } | { body: null; error: string };

// The server's rules for each field, from the spec (see scripts/constraints.mjs).
const RULES = constraints.PlanCreate;
const MONEY = /^\d{1,12}(\.\d{1,2})?$/;

/** A whole number, "" as null, or a message naming the field. */
function count(value: string, label: string, max: number): number | null | string {
  const trimmed = value.trim();
  if (trimmed === "") return null;
  if (!/^\d+$/.test(trimmed) || Number(trimmed) > max) {
    return `${label}: a whole number from 0, or empty for unlimited`;
  }
  return Number(trimmed);
}

function fields(form: PlanFormState): Checked<Fields> {
  const name = form.name.trim();
  const { minLength, maxLength } = RULES.name;
  if (name.length < minLength || name.length > maxLength) {
    return { body: null, error: `Name: ${minLength} to ${maxLength} characters` };
  }
  const fee = form.monthlyFeeUsd.trim();
  if (!MONEY.test(fee)) return { body: null, error: "Monthly fee: an amount like 249.00" };
  const spend = form.includedSpendUsd.trim();
  if (spend !== "" && !MONEY.test(spend)) {
    return { body: null, error: "Included spend: an amount like 150.00, or empty for none" };
  }
  const markup = form.markupPct.trim();
  const markupMax = RULES.markup_pct.maximum;
  if (!/^\d{1,4}(\.\d{1,2})?$/.test(markup) || Number(markup) > markupMax) {
    return { body: null, error: `Markup: a percentage from 0 to ${markupMax}` };
  }
  const tokens = count(form.includedTokens, "Included tokens", RULES.included_tokens.maximum);
  if (typeof tokens === "string") return { body: null, error: tokens };
  if (!form.overage && tokens !== null) {
    return {
      body: null,
      error: "Included tokens: a plan without overage caps spend; set included spend instead",
    };
  }
  const price = form.stripePriceId.trim();
  if (price !== "" && !new RegExp(RULES.stripe_price_id.pattern).test(price)) {
    return { body: null, error: "Stripe price: an id like price_123, or empty for none" };
  }
  const body: Fields = {
    name,
    description: form.description.trim(),
    monthly_fee_usd: fee,
    included_spend_usd: spend === "" ? null : spend,
    included_tokens: tokens,
    overage: form.overage,
    markup_pct: markup,
    stripe_price_id: price === "" ? null : price,
  };
  for (const { name: limit, label } of LIMITS) {
    const value = count(form.limits[limit], label, RULES[limit].maximum);
    if (typeof value === "string") return { body: null, error: value };
    body[limit] = value;
  }
  for (const { name: feature } of FEATURES) body[feature] = form.features[feature];
  return { body, error: null };
}

export function createBody(form: PlanFormState): Checked<Schemas["PlanCreate"]> {
  const key = form.key.trim();
  if (!new RegExp(RULES.key.pattern).test(key)) {
    return {
      body: null,
      error: `Key: lowercase letters, digits, _ or -, up to ${RULES.key.maxLength}`,
    };
  }
  const checked = fields(form);
  return checked.error === null ? { body: { key, ...checked.body }, error: null } : checked;
}

/** Money and counts compare as numbers: "249" and "249.00" are the same fee. */
function same(before: unknown, after: unknown): boolean {
  if (before === null || after === null || before === undefined || after === undefined) {
    return (before ?? null) === (after ?? null);
  }
  if (typeof before === "boolean" || typeof after === "boolean") return before === after;
  const a = Number(before);
  const b = Number(after);
  return Number.isFinite(a) && Number.isFinite(b) ? a === b : before === after;
}

/** Only the fields the form changed: a plan edit says exactly what it changes. */
export function updateBody(plan: Plan, form: PlanFormState): Checked<Schemas["PlanUpdate"]> {
  const checked = fields(form);
  if (checked.error !== null) return checked;
  const body: Schemas["PlanUpdate"] = {};
  const changed = Object.entries(checked.body).filter(([name, value]) =>
    name === "name" || name === "description" || name === "stripe_price_id"
      ? (plan[name] ?? null) !== value
      : !same(plan[name as keyof Plan], value),
  );
  for (const [name, value] of changed) Object.assign(body, { [name]: value });
  return { body, error: null };
}
