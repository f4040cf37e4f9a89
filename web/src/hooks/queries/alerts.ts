import { type Schemas, api, unwrap } from "@/api/client";
import { PAGE_SIZE, pagedOptions } from "@/hooks/queries/paging";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const alertKeys = {
  channels: ["alerts", "channels"] as const,
  channelPage: (offset: number) => ["alerts", "channels", offset] as const,
  deliveries: (offset: number) => ["alerts", "deliveries", offset] as const,
  allDeliveries: ["alerts", "deliveries"] as const,
};

export const DELIVERY_PAGE = 20;

export function useAlertChannels(offset: number) {
  return useQuery({
    queryKey: alertKeys.channelPage(offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/alerts/channels", { params: { query: { limit: PAGE_SIZE, offset } } }),
      ),
    ...pagedOptions,
  });
}

/** The delivery log, newest first; refreshed while deliveries are pending. */
export function useAlertDeliveries(offset: number) {
  return useQuery({
    queryKey: alertKeys.deliveries(offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/alerts/deliveries", {
          params: { query: { limit: DELIVERY_PAGE, offset } },
        }),
      ),
    refetchInterval: (query) =>
      query.state.data?.items.some((delivery) => delivery.status === "pending") ? 2000 : false,
  });
}

export function useCreateChannel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["AlertChannelCreate"]) =>
      unwrap(api.POST("/api/v1/alerts/channels", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: alertKeys.channels }),
  });
}

export function useUpdateChannel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ id, body }: { id: string; body: Schemas["AlertChannelUpdate"] }) =>
      unwrap(
        api.PATCH("/api/v1/alerts/channels/{channel_id}", {
          params: { path: { channel_id: id } },
          body,
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: alertKeys.channels }),
  });
}

export function useDeleteChannel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(
        api.DELETE("/api/v1/alerts/channels/{channel_id}", {
          params: { path: { channel_id: id } },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: alertKeys.channels }),
  });
}

export function useRotateSecret() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(
        api.POST("/api/v1/alerts/channels/{channel_id}/rotate-secret", {
          params: { path: { channel_id: id } },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: alertKeys.channels }),
  });
}

export function useTestChannel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(
        api.POST("/api/v1/alerts/channels/{channel_id}/test", {
          params: { path: { channel_id: id } },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: alertKeys.allDeliveries }),
  });
}

export function useReplayDelivery() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(
        api.POST("/api/v1/alerts/deliveries/{delivery_id}/replay", {
          params: { path: { delivery_id: id } },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: alertKeys.allDeliveries }),
  });
}
