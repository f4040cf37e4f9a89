// The session: the token pair from /api/v1/auth/login, kept in localStorage so a reload
// stays signed in. `refresh()` is single-flight: refresh tokens work once, so two requests
// that hit a 401 together must share one refresh, not race and revoke the session.
import type { components } from "@/api/schema";
import { create } from "zustand";
import { createJSONStorage, persist } from "zustand/middleware";

/** What login, OIDC sign-in and refresh answer (the server's `TokenPair`). */
export type TokenPair = components["schemas"]["TokenPair"];

/** The part of a pair the session keeps. */
type Tokens = Pick<TokenPair, "access_token" | "refresh_token" | "expires_in">;

interface AuthState {
  accessToken: string | null;
  refreshToken: string | null;
  /** Epoch milliseconds after which the access token is expired. */
  expiresAt: number | null;
  setTokens: (pair: Tokens) => void;
  clear: () => void;
}

export const useAuthStore = create<AuthState>()(
  persist(
    (set) => ({
      accessToken: null,
      refreshToken: null,
      expiresAt: null,
      setTokens: (pair) =>
        set({
          accessToken: pair.access_token,
          refreshToken: pair.refresh_token,
          expiresAt: Date.now() + pair.expires_in * 1000,
        }),
      clear: () => set({ accessToken: null, refreshToken: null, expiresAt: null }),
    }),
    { name: "apiary.session", storage: createJSONStorage(() => localStorage) },
  ),
);

type RefreshCall = (refreshToken: string) => Promise<TokenPair | null>;

let inFlight: Promise<string | null> | null = null;

/**
 * Exchange the refresh token for a new pair; resolves to the new access token, or null
 * (and the session is cleared) when the server refuses. Concurrent callers share one call.
 */
export function refreshSession(call: RefreshCall = postRefresh): Promise<string | null> {
  if (inFlight) return inFlight;
  const { refreshToken, setTokens, clear } = useAuthStore.getState();
  if (!refreshToken) {
    clear();
    return Promise.resolve(null);
  }
  inFlight = call(refreshToken)
    .then((pair) => {
      if (!pair) {
        clear();
        return null;
      }
      setTokens(pair);
      return pair.access_token;
    })
    .catch(() => {
      clear();
      return null;
    })
    .finally(() => {
      inFlight = null;
    });
  return inFlight;
}

async function postRefresh(refreshToken: string): Promise<TokenPair | null> {
  const response = await fetch("/api/v1/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
  return response.ok ? ((await response.json()) as TokenPair) : null;
}
