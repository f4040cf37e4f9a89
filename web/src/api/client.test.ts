import { useAuthStore } from "@/stores/auth";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { createAuthFetch, errorMessage, toApiError } from "./client";

const ok = () => new Response("{}", { status: 200 });
const unauthorized = () => new Response('{"error":"Unauthorized"}', { status: 401 });

describe("createAuthFetch", () => {
  beforeEach(() => {
    useAuthStore.getState().setSession({
      access_token: "old",
      expires_in: 900,
    });
  });

  it("sends the access token as a bearer token", async () => {
    const base = vi.fn(async (_: Request) => ok());
    await createAuthFetch(base, async () => null)(new Request("http://x/api/v1/auth/me"));
    expect(base.mock.calls[0]?.[0].headers.get("authorization")).toBe("Bearer old");
  });

  it("refreshes once on a 401 and retries with the new token", async () => {
    const base = vi.fn(async (request: Request) =>
      request.headers.get("authorization") === "Bearer new" ? ok() : unauthorized(),
    );
    const refresh = vi.fn(async () => "new");
    const response = await createAuthFetch(
      base,
      refresh,
    )(new Request("http://x/api/v1/api-keys", { method: "POST", body: '{"name":"k"}' }));
    expect(response.status).toBe(200);
    expect(refresh).toHaveBeenCalledTimes(1);
    expect(await base.mock.calls[1]?.[0].text()).toBe('{"name":"k"}');
  });

  it("signs out when the refreshed token is refused too", async () => {
    const response = await createAuthFetch(
      async () => unauthorized(),
      async () => "new",
    )(new Request("http://x/api/v1/members"));
    expect(response.status).toBe(401);
    expect(useAuthStore.getState().accessToken).toBeNull();
  });

  it("marks sign-in, refresh and sign-out as this page's (the refresh cookie's CSRF check)", async () => {
    const base = vi.fn(async (_: Request) => ok());
    const authFetch = createAuthFetch(base, async () => null);
    await authFetch(new Request("http://x/api/v1/auth/logout", { method: "POST" }));
    await authFetch(new Request("http://x/api/v1/auth/login", { method: "POST", body: "{}" }));
    await authFetch(new Request("http://x/api/v1/agents"));
    const sent = base.mock.calls.map((call) => call[0].headers.get("x-apiary-csrf"));
    expect(sent).toEqual(["1", "1", null]);
  });

  it("never refreshes on a failed sign-in", async () => {
    const refresh = vi.fn(async () => "new");
    const response = await createAuthFetch(
      async () => unauthorized(),
      refresh,
    )(new Request("http://x/api/v1/auth/login", { method: "POST", body: "{}" }));
    expect(response.status).toBe(401);
    expect(refresh).not.toHaveBeenCalled();
  });
});

describe("toApiError", () => {
  it("keeps the server's detail for the user to read", () => {
    const error = toApiError(409, { error: "Conflict", detail: "a tenant named acme exists" });
    expect(error.name).toBe("Conflict");
    expect(errorMessage(error)).toBe("a tenant named acme exists");
  });
  it("reads OpenAI-shaped errors from /v1", () => {
    expect(
      toApiError(429, { error: { message: "slow down", code: "TooManyRequests" } }).detail,
    ).toBe("slow down");
  });
  it("falls back to the status when the body says nothing", () => {
    expect(toApiError(502, null).detail).toBe("the server answered 502");
  });
});
