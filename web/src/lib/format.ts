// Display formatting for money, token counts, rates and dates. Pure functions: unit-tested.

/** US dollars; sub-cent amounts keep enough digits to be non-zero (model calls are cheap). */
export function formatUsd(value: number): string {
  if (value === 0) return "$0.00";
  const abs = Math.abs(value);
  const digits = abs >= 0.01 ? 2 : abs >= 0.0001 ? 4 : 6;
  const text = abs.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
  return `${value < 0 ? "-" : ""}$${text}`;
}

/** Token counts: 950, 12.3K, 4.5M. */
export function formatTokens(value: number): string {
  const abs = Math.abs(value);
  if (abs < 1000) return String(value);
  if (abs < 1_000_000) return `${trim(value / 1000)}K`;
  if (abs < 1_000_000_000) return `${trim(value / 1_000_000)}M`;
  return `${trim(value / 1_000_000_000)}B`;
}

function trim(value: number): string {
  return value.toFixed(1).replace(/\.0$/, "");
}

/** A ratio in [0, 1] as a percentage: 0.256 -> "25.6%". */
export function formatPercent(ratio: number): string {
  return `${trim(ratio * 100)}%`;
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "—";
  return date.toISOString().replace("T", " ").slice(0, 16);
}

/** The first instant of the current UTC month and of the next one, as ISO strings. */
export function monthWindow(now: Date = new Date()): { from: string; to: string } {
  const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const to = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  return { from: from.toISOString(), to: to.toISOString() };
}

/** How much of a budget is spent, clamped to [0, 1]; null when there is no budget. */
export function budgetUsage(spent: number, budget: number | null | undefined): number | null {
  if (budget === null || budget === undefined) return null;
  if (budget <= 0) return 1;
  return Math.min(1, Math.max(0, spent / budget));
}
