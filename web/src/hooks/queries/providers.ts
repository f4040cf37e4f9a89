import { api, unwrap } from "@/api/client";
import { useQuery } from "@tanstack/react-query";

export const providerKeys = { health: ["providers", "health"] as const };

/** Circuit-breaker states change within seconds: refreshed while the page is open. */
export function useProviderHealth(enabled = true) {
  return useQuery({
    queryKey: providerKeys.health,
    queryFn: () => unwrap(api.GET("/api/v1/providers/health")),
    refetchInterval: 10_000,
    enabled,
  });
}
