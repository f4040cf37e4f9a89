import { type Schemas, api, unwrap } from "@/api/client";
import { PAGE_SIZE, pagedOptions } from "@/hooks/queries/paging";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const memberKeys = {
  all: ["members"] as const,
  page: (offset: number) => ["members", offset] as const,
};

export function useMembers(offset: number) {
  return useQuery({
    queryKey: memberKeys.page(offset),
    queryFn: () =>
      unwrap(api.GET("/api/v1/members", { params: { query: { limit: PAGE_SIZE, offset } } })),
    ...pagedOptions,
  });
}

export function useAddMember() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["MemberCreate"]) => unwrap(api.POST("/api/v1/members", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: memberKeys.all }),
  });
}

export function useChangeRole() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ id, role }: { id: string; role: Schemas["Role"] }) =>
      unwrap(
        api.PATCH("/api/v1/members/{membership_id}", {
          params: { path: { membership_id: id } },
          body: { role },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: memberKeys.all }),
  });
}

export function useRemoveMember() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(
        api.DELETE("/api/v1/members/{membership_id}", {
          params: { path: { membership_id: id } },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: memberKeys.all }),
  });
}
