import { type Schemas, api, unwrap } from "@/api/client";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const limitKeys = { all: ["limits"] as const };

export function useLimits(enabled = true) {
  return useQuery({
    queryKey: limitKeys.all,
    queryFn: () => unwrap(api.GET("/api/v1/limits")),
    enabled,
  });
}

export function useUpdateLimits() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["LimitsUpdate"]) => unwrap(api.PATCH("/api/v1/limits", { body })),
    onSuccess: (limits) => queryClient.setQueryData(limitKeys.all, limits),
  });
}
