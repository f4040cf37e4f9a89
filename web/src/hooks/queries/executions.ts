import { type Schemas, api, unwrap } from "@/api/client";
import { PAGE_SIZE, pagedOptions } from "@/hooks/queries/paging";
import { isFinished } from "@/lib/liveExecution";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const EXECUTIONS_PAGE_SIZE = 25;

export interface ExecutionFilters {
  agentId?: string;
  state?: Schemas["ExecutionState"];
  /** ISO instants: created at or after `from`, before `to`. */
  from?: string;
  to?: string;
}

export const executionKeys = {
  all: ["executions"] as const,
  list: (filters: ExecutionFilters, offset: number, limit: number) =>
    ["executions", "list", filters, offset, limit] as const,
  detail: (id: string) => ["executions", "detail", id] as const,
  ledger: (id: string) => ["executions", "ledger", id] as const,
  ledgerPage: (id: string, offset: number) => ["executions", "ledger", id, offset] as const,
};

export function useExecutions(
  filters: ExecutionFilters,
  { offset = 0, limit = EXECUTIONS_PAGE_SIZE, enabled = true } = {},
) {
  return useQuery({
    queryKey: executionKeys.list(filters, offset, limit),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/executions", {
          params: {
            query: {
              agent_id: filters.agentId || undefined,
              state: filters.state || undefined,
              created_from: filters.from || undefined,
              created_to: filters.to || undefined,
              limit,
              offset,
            },
          },
        }),
      ),
    enabled,
    // While a listed execution runs, its state and cost change: look again every 2 s.
    refetchInterval: (query) =>
      query.state.data?.items.some((execution) => !isFinished(execution.state)) ? 2000 : false,
  });
}

export function useExecution(id: string) {
  return useQuery({
    queryKey: executionKeys.detail(id),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/executions/{execution_id}", {
          params: { path: { execution_id: id } },
        }),
      ),
  });
}

export function useExecutionLedger(id: string, enabled: boolean, offset: number) {
  return useQuery({
    queryKey: executionKeys.ledgerPage(id, offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/executions/{execution_id}/ledger", {
          params: { path: { execution_id: id }, query: { limit: PAGE_SIZE, offset } },
        }),
      ),
    enabled,
    ...pagedOptions,
  });
}

export function useStartExecution() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["ExecutionCreate"]) =>
      unwrap(api.POST("/api/v1/executions", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: executionKeys.all }),
  });
}

export function useCancelExecution() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(
        api.POST("/api/v1/executions/{execution_id}/cancel", {
          params: { path: { execution_id: id } },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: executionKeys.all }),
  });
}
