import { type Schemas, api, unwrap } from "@/api/client";
import { PAGE_SIZE, fetchAll, pagedOptions } from "@/hooks/queries/paging";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const agentKeys = {
  all: ["agents"] as const,
  page: (offset: number) => ["agents", "page", offset] as const,
  every: ["agents", "every"] as const,
  tools: ["agents", "tools"] as const,
  versions: (agentId: string, offset: number) => ["agents", agentId, "versions", offset] as const,
};

/** One page of the tenant's agents, for the agents table. */
export function useAgents(offset: number) {
  return useQuery({
    queryKey: agentKeys.page(offset),
    queryFn: () =>
      unwrap(api.GET("/api/v1/agents", { params: { query: { limit: PAGE_SIZE, offset } } })),
    ...pagedOptions,
  });
}

/** Every agent, for pickers and for naming an agent by id. */
export function useAllAgents() {
  return useQuery({
    queryKey: agentKeys.every,
    queryFn: () => fetchAll((query) => unwrap(api.GET("/api/v1/agents", { params: { query } }))),
  });
}

/** The tools an agent may be given (the server's registry). */
export function useAgentTools() {
  return useQuery({
    queryKey: agentKeys.tools,
    queryFn: () => unwrap(api.GET("/api/v1/agents/tools")),
    staleTime: Number.POSITIVE_INFINITY, // fixed for the server's lifetime
  });
}

export function useAgentVersions(agentId: string | null, offset: number) {
  return useQuery({
    queryKey: agentKeys.versions(agentId ?? "", offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/agents/{agent_id}/versions", {
          params: { path: { agent_id: agentId ?? "" }, query: { limit: PAGE_SIZE, offset } },
        }),
      ),
    enabled: agentId !== null,
    ...pagedOptions,
  });
}

export function useCreateAgent() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["AgentCreate"]) => unwrap(api.POST("/api/v1/agents", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: agentKeys.all }),
  });
}

export function useUpdateAgent() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ id, body }: { id: string; body: Schemas["AgentUpdate"] }) =>
      unwrap(api.PATCH("/api/v1/agents/{agent_id}", { params: { path: { agent_id: id } }, body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: agentKeys.all }),
  });
}

export function useDeleteAgent() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(api.DELETE("/api/v1/agents/{agent_id}", { params: { path: { agent_id: id } } })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: agentKeys.all }),
  });
}
