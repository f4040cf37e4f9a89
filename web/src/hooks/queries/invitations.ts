import { type Schemas, api, unwrap } from "@/api/client";
import { authKeys } from "@/hooks/queries/auth";
import { memberKeys } from "@/hooks/queries/members";
import { PAGE_SIZE, pagedOptions } from "@/hooks/queries/paging";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const invitationKeys = {
  /** The signed-in account's own pending invitations, in any tenant. */
  mine: ["invitations", "mine"] as const,
  /** The invitations the current tenant is waiting on. */
  sent: ["invitations", "sent"] as const,
  sentPage: (offset: number) => ["invitations", "sent", offset] as const,
};

export function useMyInvitations({ enabled }: { enabled: boolean }) {
  return useQuery({
    queryKey: invitationKeys.mine,
    queryFn: () => unwrap(api.GET("/api/v1/invitations")),
    enabled,
  });
}

export function useAnswerInvitation() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async ({ id, accept }: { id: string; accept: boolean }) => {
      const params = { path: { invitation_id: id } };
      if (accept) return unwrap(api.POST("/api/v1/invitations/{invitation_id}/accept", { params }));
      await unwrap(api.POST("/api/v1/invitations/{invitation_id}/decline", { params }));
      return null;
    },
    onSuccess: () => {
      queryClient.invalidateQueries({ queryKey: invitationKeys.mine });
      queryClient.invalidateQueries({ queryKey: authKeys.me }); // its memberships changed
    },
  });
}

export function useSentInvitations(offset: number) {
  return useQuery({
    queryKey: invitationKeys.sentPage(offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/members/invitations", {
          params: { query: { limit: PAGE_SIZE, offset } },
        }),
      ),
    ...pagedOptions,
  });
}

export function useInvite() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["InvitationCreate"]) =>
      unwrap(api.POST("/api/v1/members/invitations", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: invitationKeys.sent }),
  });
}

export function useCancelInvitation() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(
        api.DELETE("/api/v1/members/invitations/{invitation_id}", {
          params: { path: { invitation_id: id } },
        }),
      ),
    onSuccess: () => {
      queryClient.invalidateQueries({ queryKey: invitationKeys.sent });
      queryClient.invalidateQueries({ queryKey: memberKeys.all });
    },
  });
}
