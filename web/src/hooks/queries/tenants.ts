import { type Schemas, api, unwrap } from "@/api/client";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const tenantKeys = { all: ["tenants"] as const };

export function useTenants() {
  return useQuery({
    queryKey: tenantKeys.all,
    queryFn: () => unwrap(api.GET("/api/v1/tenants", { params: { query: { limit: 200 } } })),
  });
}

export function useCreateTenant() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["TenantCreate"]) => unwrap(api.POST("/api/v1/tenants", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: tenantKeys.all }),
  });
}

export function useSetTenantStatus() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ id, status }: { id: string; status: Schemas["TenantStatus"] }) =>
      unwrap(
        api.PATCH("/api/v1/tenants/{tenant_id}", {
          params: { path: { tenant_id: id } },
          body: { status },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: tenantKeys.all }),
  });
}
