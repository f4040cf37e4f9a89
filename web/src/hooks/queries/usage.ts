import { type Schemas, api, unwrap } from "@/api/client";
import { useQuery } from "@tanstack/react-query";

export interface UsageWindow {
  from: string;
  to: string;
}

export const usageKeys = {
  summary: (window: UsageWindow, baseline?: string) =>
    ["usage", "summary", window, baseline ?? null] as const,
  series: (window: UsageWindow, groupBy: Schemas["UsageDimension"], byDay: boolean) =>
    ["usage", "series", window, groupBy, byDay] as const,
};

export function useUsageSummary(
  window: UsageWindow,
  options: { baseline?: string; enabled?: boolean } = {},
) {
  const { baseline, enabled = true } = options;
  return useQuery({
    queryKey: usageKeys.summary(window, baseline),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/usage/summary", {
          params: { query: { from: window.from, to: window.to, baseline: baseline || undefined } },
        }),
      ),
    enabled,
  });
}

export function useUsageSeries(
  window: UsageWindow,
  groupBy: Schemas["UsageDimension"],
  byDay: boolean,
) {
  return useQuery({
    queryKey: usageKeys.series(window, groupBy, byDay),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/usage/series", {
          params: {
            query: {
              from: window.from,
              to: window.to,
              group_by: groupBy,
              bucket: byDay && groupBy !== "day" ? "day" : undefined,
            },
          },
        }),
      ),
  });
}

/** The CSV export's URL; the browser downloads it with the session (see Analytics). */
export function exportCsvPath(window: UsageWindow): string {
  const query = new URLSearchParams({ from: window.from, to: window.to });
  return `/api/v1/usage/export.csv?${query.toString()}`;
}
