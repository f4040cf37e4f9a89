import { type Schemas, api, unwrap } from "@/api/client";
import { PAGE_SIZE, fetchAll, pagedOptions } from "@/hooks/queries/paging";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const apiKeyKeys = {
  all: ["api-keys"] as const,
  page: (offset: number) => ["api-keys", "page", offset] as const,
  every: ["api-keys", "every"] as const,
};

/** One page of the tenant's API keys, for the keys table. */
export function useApiKeys(offset: number) {
  return useQuery({
    queryKey: apiKeyKeys.page(offset),
    queryFn: () =>
      unwrap(api.GET("/api/v1/api-keys", { params: { query: { limit: PAGE_SIZE, offset } } })),
    ...pagedOptions,
  });
}

/** Every API key, for naming a key by id. */
export function useAllApiKeys() {
  return useQuery({
    queryKey: apiKeyKeys.every,
    queryFn: () => fetchAll((query) => unwrap(api.GET("/api/v1/api-keys", { params: { query } }))),
  });
}

export function useCreateApiKey() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["ApiKeyCreate"]) => unwrap(api.POST("/api/v1/api-keys", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: apiKeyKeys.all }),
  });
}

export function useRevokeApiKey() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (keyId: string) =>
      unwrap(api.DELETE("/api/v1/api-keys/{key_id}", { params: { path: { key_id: keyId } } })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: apiKeyKeys.all }),
  });
}
