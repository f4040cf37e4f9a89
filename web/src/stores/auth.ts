// The session. The access token lives in memory only: nothing of the session is in
// localStorage or sessionStorage, where any script on the page could read it. The refresh
// token is an httpOnly cookie the server sets at sign-in (scoped to /api/v1/auth), so a
// reload restores the session by asking /api/v1/auth/refresh, which reads the cookie.
//
// `refreshSession()` is single-flight within a tab and, through the Web Locks API, across
// the tabs of this origin: refresh tokens work once, and the cookie is shared, so two
// refreshes must follow one another (the second sends the cookie the first rotated), never
// race and revoke the session as a replay.
import type { components } from "@/api/schema";
import { create } from "zustand";

/** What login, OIDC sign-in and refresh answer (the server's `TokenPair`). */
export type TokenPair = components["schemas"]["TokenPair"];

/** The header the server requires of requests that use the refresh cookie (CSRF check). */
export const CSRF_HEADER = { "X-Apiary-CSRF": "1" } as const;

/** restoring: the page just loaded, and the cookie has not been tried yet. */
export type SessionStatus = "restoring" | "signedIn" | "signedOut";

interface AuthState {
  accessToken: string | null;
  /** Epoch milliseconds after which the access token is expired. */
  expiresAt: number | null;
  status: SessionStatus;
  setSession: (pair: Pick<TokenPair, "access_token" | "expires_in">) => void;
  clear: () => void;
}

// Bumped by every sign-in and sign-out, so a refresh that started before one does not undo it.
let generation = 0;

export const useAuthStore = create<AuthState>()((set) => ({
  accessToken: null,
  expiresAt: null,
  status: "restoring",
  setSession: (pair) => {
    generation += 1;
    set({
      accessToken: pair.access_token,
      expiresAt: Date.now() + pair.expires_in * 1000,
      status: "signedIn",
    });
  },
  clear: () => {
    generation += 1;
    set({ accessToken: null, expiresAt: null, status: "signedOut" });
  },
}));

// Earlier versions kept the token pair in localStorage: never leave one behind.
if (typeof localStorage !== "undefined") localStorage.removeItem("apiary.session");

type RefreshCall = () => Promise<TokenPair | null>;
type TabLock = <T>(work: () => Promise<T>) => Promise<T>;

/** Run `work` while holding this origin's refresh lock (one tab at a time). */
export function acrossTabs<T>(work: () => Promise<T>): Promise<T> {
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  // request() resolves to what the callback resolves to.
  return locks ? (locks.request("apiary.refresh", () => work()) as Promise<T>) : work();
}

let inFlight: Promise<string | null> | null = null;

/**
 * Exchange the refresh cookie for a new access token; resolves to it, or null (and the
 * session is signed out) when the server refuses. Concurrent callers share one call.
 */
export function refreshSession(
  call: RefreshCall = postRefresh,
  lock: TabLock = acrossTabs,
): Promise<string | null> {
  if (inFlight) return inFlight;
  const started = generation;
  const { setSession, clear } = useAuthStore.getState();
  inFlight = lock(call)
    .catch(() => null)
    .then((pair) => {
      if (generation !== started) {
        // Signed in or out meanwhile (an OIDC callback on this very load): that wins.
        return useAuthStore.getState().accessToken;
      }
      if (!pair) {
        clear();
        return null;
      }
      setSession(pair);
      return pair.access_token;
    })
    .finally(() => {
      inFlight = null;
    });
  return inFlight;
}

/** On page load: sign back in with the cookie, if there is a session to restore. */
export async function restoreSession(call: RefreshCall = postRefresh): Promise<void> {
  if (useAuthStore.getState().status !== "restoring") return;
  await refreshSession(call);
}

async function postRefresh(): Promise<TokenPair | null> {
  const response = await fetch("/api/v1/auth/refresh", {
    method: "POST",
    credentials: "same-origin",
    headers: CSRF_HEADER,
  });
  return response.ok ? ((await response.json()) as TokenPair) : null;
}
