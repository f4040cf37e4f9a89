import { api, unwrap } from "@/api/client";
import type { OidcCodeExchange } from "@/lib/oidc";
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
    // The refresh token comes back as an httpOnly cookie, never into this page.
    mutationFn: (body: { email: string; password: string }) =>
      unwrap(api.POST("/api/v1/auth/login", { body: { ...body, refresh_cookie: true } })),
    onSuccess: (pair) => {
      queryClient.clear();
      useAuthStore.getState().setSession(pair);
    },
  });
}

/** Finish the OIDC code flow: the server redeems the code with this attempt's verifier. */
export function useOidcSignIn() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (exchange: OidcCodeExchange) =>
      unwrap(api.POST("/api/v1/auth/oidc/code", { body: { ...exchange, refresh_cookie: true } })),
    onSuccess: (pair) => {
      queryClient.clear();
      useAuthStore.getState().setSession(pair);
    },
  });
}

export function useSignOut() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async () => {
      // The server ends the session and clears the cookie. Best effort: the page's
      // session ends even when the server cannot be reached.
      await api.POST("/api/v1/auth/logout", {}).catch(() => undefined);
    },
    onSettled: () => {
      useAuthStore.getState().clear();
      queryClient.clear();
    },
  });
}
