import { api, unwrap } from "@/api/client";
import { useAuthStore } from "@/stores/auth";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const authKeys = {
  config: ["auth", "config"] as const,
  me: ["auth", "me"] as const,
};

export function useAuthConfig() {
  return useQuery({
    queryKey: authKeys.config,
    queryFn: () => unwrap(api.GET("/api/v1/auth/config")),
    staleTime: Number.POSITIVE_INFINITY,
  });
}

export function useMe() {
  const signedIn = useAuthStore((state) => state.accessToken !== null);
  return useQuery({
    queryKey: authKeys.me,
    queryFn: () => unwrap(api.GET("/api/v1/auth/me")),
    enabled: signedIn,
    staleTime: 60_000,
  });
}

export function useSignIn() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: { email: string; password: string }) =>
      unwrap(api.POST("/api/v1/auth/login", { body })),
    onSuccess: (pair) => {
      queryClient.clear();
      useAuthStore.getState().setTokens(pair);
    },
  });
}

export function useOidcSignIn() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (idToken: string) =>
      unwrap(api.POST("/api/v1/auth/oidc", { body: { id_token: idToken } })),
    onSuccess: (pair) => {
      queryClient.clear();
      useAuthStore.getState().setTokens(pair);
    },
  });
}

export function useSignOut() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async () => {
      const refreshToken = useAuthStore.getState().refreshToken;
      // Best effort: the local session ends even when the server cannot be reached.
      await api
        .POST("/api/v1/auth/logout", { body: { refresh_token: refreshToken } })
        .catch(() => undefined);
    },
    onSettled: () => {
      useAuthStore.getState().clear();
      queryClient.clear();
    },
  });
}
