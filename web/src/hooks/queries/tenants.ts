import { type Schemas, api, unwrap } from "@/api/client";
import { PAGE_SIZE, pagedOptions } from "@/hooks/queries/paging";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const tenantKeys = {
  all: ["tenants"] as const,
  page: (offset: number) => ["tenants", offset] as const,
};

export function useTenants(offset: number) {
  return useQuery({
    queryKey: tenantKeys.page(offset),
    queryFn: () =>
      unwrap(api.GET("/api/v1/tenants", { params: { query: { limit: PAGE_SIZE, offset } } })),
    ...pagedOptions,
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
