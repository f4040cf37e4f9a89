// Reshape the usage API's (day, key) rows into what a stacked chart wants: one point per
// day with one field per key.

import type { Schemas } from "@/api/client";

/** The fields of the server's series row that a chart reads. */
export type SeriesRow = Pick<
  Schemas["UsageSeriesRow"],
  "key" | "day" | "cost_usd" | "prompt_tokens" | "completion_tokens"
>;

export type Metric = "cost_usd" | "tokens";

export const NONE_KEY = "(none)";

function metricOf(row: SeriesRow, metric: Metric): number {
  return metric === "tokens" ? row.prompt_tokens + row.completion_tokens : row.cost_usd;
}

export function pivotByDay(
  rows: SeriesRow[],
  metric: Metric,
  label: (key: string | null) => string = (key) => key ?? NONE_KEY,
): { points: Record<string, number | string>[]; keys: string[] } {
  const keys: string[] = [];
  const byDay = new Map<string, Record<string, number | string>>();
  for (const row of rows) {
    const day = row.day ?? row.key ?? NONE_KEY;
    const key = label(row.key);
    if (!keys.includes(key)) keys.push(key);
    const point = byDay.get(day) ?? { day };
    point[key] = ((point[key] as number | undefined) ?? 0) + metricOf(row, metric);
    byDay.set(day, point);
  }
  const points = [...byDay.values()].sort((a, b) => String(a.day).localeCompare(String(b.day)));
  // Every point carries every key, so stacked bars line up.
  for (const point of points) for (const key of keys) point[key] ??= 0;
  return { points, keys };
}
