import { type Schemas, api, unwrap } from "@/api/client";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const agentKeys = {
  all: ["agents"] as const,
  tools: ["agents", "tools"] as const,
  versions: (agentId: string) => ["agents", agentId, "versions"] as const,
};

export function useAgents() {
  return useQuery({
    queryKey: agentKeys.all,
    queryFn: () => unwrap(api.GET("/api/v1/agents", { params: { query: { limit: 200 } } })),
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

export function useAgentVersions(agentId: string | null) {
  return useQuery({
    queryKey: agentKeys.versions(agentId ?? ""),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/agents/{agent_id}/versions", {
          params: { path: { agent_id: agentId ?? "" }, query: { limit: 200 } },
        }),
      ),
    enabled: agentId !== null,
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
