import { CSRF_HEADER, refreshSession, useAuthStore } from "@/stores/auth";
// The typed API client: paths and schemas come from `schema.d.ts`, generated from Apiary's
// OpenAPI spec (`npm run gen:api`); nothing here restates an API type by hand.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];

// Their 401s mean "wrong credentials", not "session expired": never refresh on them.
const SIGN_IN_PATHS = [
  "/api/v1/auth/login",
  "/api/v1/auth/oidc",
  "/api/v1/auth/oidc/code",
  "/api/v1/auth/refresh",
];

type Fetch = (request: Request) => Promise<Response>;

/**
 * fetch with the session's bearer token. On a 401 it refreshes the session once and
 * retries; when that fails the session is cleared, which sends the app to sign-in.
 */
export function createAuthFetch(
  base: Fetch = (request) => fetch(request),
  refresh: () => Promise<string | null> = () => refreshSession(),
): Fetch {
  return async (request) => {
    const path = new URL(request.url, "http://localhost").pathname;
    // Sign-in, refresh and sign-out set or use the refresh cookie; the server wants proof
    // that this page, not another site's, sent them (a header no cross-site form can add).
    if (path.startsWith("/api/v1/auth/")) {
      for (const [name, value] of Object.entries(CSRF_HEADER)) request.headers.set(name, value);
    }
    const token = useAuthStore.getState().accessToken;
    if (!token || SIGN_IN_PATHS.includes(path)) return base(request);
    const retry = request.clone();
    request.headers.set("authorization", `Bearer ${token}`);
    const response = await base(request);
    if (response.status !== 401) return response;
    const fresh = await refresh();
    if (!fresh) return response;
    retry.headers.set("authorization", `Bearer ${fresh}`);
    const second = await base(retry);
    if (second.status === 401) useAuthStore.getState().clear();
    return second;
  };
}

/** fetch with the session, for the few calls openapi-fetch cannot make (event streams). */
export const authFetch = createAuthFetch();

export const api = createClient<paths>({
  baseUrl: typeof window === "undefined" ? "http://localhost" : window.location.origin,
  fetch: authFetch,
});

/** An error answered by the API, with its `{"error", "detail"}` body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly name: string,
    readonly detail: string,
  ) {
    super(detail);
  }
}

export function toApiError(status: number, body: unknown): ApiError {
  if (body && typeof body === "object") {
    const record = body as Record<string, unknown>;
    if (typeof record.detail === "string") {
      return new ApiError(status, String(record.error ?? "Error"), record.detail);
    }
    const nested = record.error as Record<string, unknown> | undefined;
    if (nested && typeof nested.message === "string") {
      return new ApiError(status, String(nested.code ?? "Error"), nested.message);
    }
  }
  return new ApiError(status, "Error", `the server answered ${status}`);
}

/** Await an openapi-fetch call: its data, or an ApiError carrying the server's message. */
export async function unwrap<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (error !== undefined || !response.ok) throw toApiError(response.status, error);
  return data as T;
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.detail;
  if (error instanceof Error) return error.message;
  return "something went wrong";
}
