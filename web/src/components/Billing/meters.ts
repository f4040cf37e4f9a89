// How a plan's entitlements and a tenant's money read on the Billing page: labels, the
// fill of each meter, invoice amounts in their currency. Pure functions: unit-tested.
import type { Schemas } from "@/api/client";
import { formatTokens, formatUsd } from "@/lib/format";

type Usage = Schemas["EntitlementUsage"];

const ENTITLEMENTS: Record<string, { label: string; bytes?: boolean; rate?: boolean }> = {
  seats: { label: "Seats" },
  max_subagents: { label: "Sub-agents per execution" },
  concurrent_executions: { label: "Concurrent executions" },
  knowledge_bases: { label: "Knowledge bases" },
  storage_bytes: { label: "Stored documents", bytes: true },
  requests_per_minute: { label: "Requests per minute", rate: true },
  tokens_per_minute: { label: "Tokens per minute", rate: true },
};

export const FEATURE_LABELS: Record<string, string> = {
  semantic_cache: "Semantic cache",
  oidc: "Single sign-on (OIDC)",
  audit_export: "Audit export",
};

/** 1536 → "1.5 KiB"; binary units, as the plans' storage allowances are set. */
export function formatBytes(value: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let amount = value;
  let unit = 0;
  while (Math.abs(amount) >= 1024 && unit < units.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  const text = unit === 0 ? String(amount) : amount.toFixed(1).replace(/\.0$/, "");
  return `${text} ${units[unit]}`;
}

export interface Meter {
  entitlement: string;
  label: string;
  /** "3 of 10", "12 MiB of 1 GiB", "up to 600", "unlimited". */
  text: string;
  /** How full, in [0, 1]; null when there is nothing to fill (a rate, or no limit). */
  fill: number | null;
  tone: "green" | "amber" | "red";
}

/** At this share of a limit a meter turns amber: the tenant should know before it stops. */
export const WARN_AT = 0.8;

export function meterOf(usage: Usage): Meter {
  const known = ENTITLEMENTS[usage.entitlement];
  const label = known?.label ?? usage.entitlement.replace(/_/g, " ");
  const show = (value: number) =>
    known?.bytes ? formatBytes(value) : known?.rate ? formatTokens(value) : String(value);
  const base = { entitlement: usage.entitlement, label };
  if (usage.limit === null) {
    const text = usage.used === null ? "unlimited" : `${show(usage.used)} (unlimited)`;
    return { ...base, text, fill: null, tone: "green" };
  }
  if (usage.used === null) {
    return { ...base, text: `up to ${show(usage.limit)}`, fill: null, tone: "green" };
  }
  const ratio = usage.limit === 0 ? 1 : usage.used / usage.limit;
  const fill = Math.min(1, Math.max(0, ratio));
  const tone = ratio >= 1 ? "red" : ratio >= WARN_AT ? "amber" : "green";
  return { ...base, text: `${show(usage.used)} of ${show(usage.limit)}`, fill, tone };
}

// Currencies without a minor unit (as apiary/billing/money.py has them): every other has two.
const ZERO_DECIMAL = new Set(["JPY", "KRW", "VND", "CLP", "ISK", "HUF"]);

/** An invoice amount in minor units (cents) in its currency: 24900, "USD" → "$249.00". */
export function formatMinor(amount: number, currency: string): string {
  const digits = ZERO_DECIMAL.has(currency) ? 0 : 2;
  return new Intl.NumberFormat("en-US", {
    style: "currency",
    currency,
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  }).format(amount / 10 ** digits);
}

/** A decimal string of USD as the API sends money ("249.00"); null as "—". */
export function formatUsdText(value: string | null | undefined): string {
  if (value === null || value === undefined) return "—";
  const number = Number(value);
  return Number.isFinite(number) ? formatUsd(number) : value;
}

export const PAYMENT_STATUS: Record<string, { label: string; tone: Meter["tone"] | "neutral" }> = {
  not_applicable: { label: "invoice only", tone: "neutral" },
  pending_sync: { label: "to be sent to Stripe", tone: "amber" },
  open: { label: "open", tone: "amber" },
  paid: { label: "paid", tone: "green" },
  failed: { label: "payment failed", tone: "red" },
  void: { label: "void", tone: "neutral" },
};

export function paymentStatus(status: string) {
  return PAYMENT_STATUS[status] ?? { label: status, tone: "neutral" as const };
}
