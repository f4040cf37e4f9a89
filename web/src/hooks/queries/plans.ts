import { type Schemas, api, unwrap } from "@/api/client";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const planKeys = {
  all: ["plans"] as const,
  revenue: (from: string, to: string) => ["plans", "revenue", from, to] as const,
};

/** The platform's plans, archived ones included (the super admin's list). */
export function usePlans() {
  return useQuery({
    queryKey: planKeys.all,
    queryFn: () =>
      unwrap(api.GET("/api/v1/admin/plans", { params: { query: { archived: true } } })),
  });
}

export function useCreatePlan() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["PlanCreate"]) => unwrap(api.POST("/api/v1/admin/plans", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: planKeys.all }),
  });
}

export function useUpdatePlan() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({
      key,
      body,
      force = false,
    }: {
      key: string;
      body: Schemas["PlanUpdate"];
      force?: boolean;
    }) =>
      unwrap(
        api.PATCH("/api/v1/admin/plans/{key}", {
          params: { path: { key }, query: { force } },
          body,
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: planKeys.all }),
  });
}

export function useArchivePlan() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (key: string) =>
      unwrap(api.DELETE("/api/v1/admin/plans/{key}", { params: { path: { key } } })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: planKeys.all }),
  });
}

/** Revenue, provider cost and margin per tenant from month `from` to month `to` (YYYY-MM). */
export function useRevenue(from: string, to: string) {
  return useQuery({
    queryKey: planKeys.revenue(from, to),
    queryFn: () =>
      unwrap(api.GET("/api/v1/admin/billing/revenue", { params: { query: { from, to } } })),
  });
}
