import { beforeEach, describe, expect, it, vi } from "vitest";
import { type TokenPair, refreshSession, useAuthStore } from "./auth";

const pair = (n: number): TokenPair => ({
  access_token: `access-${n}`,
  refresh_token: `refresh-${n}`,
  token_type: "bearer",
  expires_in: 900,
  tenant_id: null,
  role: "tenant_admin",
});

describe("refreshSession", () => {
  beforeEach(() => {
    useAuthStore.getState().clear();
    useAuthStore.getState().setTokens(pair(1));
  });

  it("stores the new pair and returns the new access token", async () => {
    const call = vi.fn(async () => pair(2));
    await expect(refreshSession(call)).resolves.toBe("access-2");
    expect(call).toHaveBeenCalledWith("refresh-1");
    expect(useAuthStore.getState().refreshToken).toBe("refresh-2");
  });

  it("shares one refresh between concurrent callers (refresh tokens work once)", async () => {
    let release: (value: TokenPair) => void = () => {};
    const call = vi.fn(
      () =>
        new Promise<TokenPair>((resolve) => {
          release = resolve;
        }),
    );
    const first = refreshSession(call);
    const second = refreshSession(call);
    release(pair(3));
    expect(await Promise.all([first, second])).toEqual(["access-3", "access-3"]);
    expect(call).toHaveBeenCalledTimes(1);
  });

  it("clears the session when the server refuses the refresh token", async () => {
    await expect(refreshSession(async () => null)).resolves.toBeNull();
    expect(useAuthStore.getState().accessToken).toBeNull();
    expect(useAuthStore.getState().refreshToken).toBeNull();
  });

  it("clears the session when there is no refresh token at all", async () => {
    useAuthStore.getState().clear();
    const call = vi.fn(async () => pair(4));
    await expect(refreshSession(call)).resolves.toBeNull();
    expect(call).not.toHaveBeenCalled();
  });
});
