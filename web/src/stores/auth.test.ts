import { beforeEach, describe, expect, it, vi } from "vitest";
import { type TokenPair, refreshSession, restoreSession, useAuthStore } from "./auth";

const pair = (n: number): TokenPair => ({
  access_token: `access-${n}`,
  refresh_token: null, // in the httpOnly cookie, out of this page's reach
  token_type: "bearer",
  expires_in: 900,
  tenant_id: null,
  role: "tenant_admin",
});

const storedAnywhere = () =>
  [localStorage, sessionStorage].flatMap((storage) =>
    Object.keys(storage).map((key) => storage.getItem(key) ?? ""),
  );

describe("the session store", () => {
  beforeEach(() => {
    localStorage.clear();
    sessionStorage.clear();
    useAuthStore.setState({ accessToken: null, expiresAt: null, status: "restoring" });
  });

  it("keeps the access token in memory only", () => {
    useAuthStore.getState().setSession(pair(1));
    expect(useAuthStore.getState().accessToken).toBe("access-1");
    expect(useAuthStore.getState().status).toBe("signedIn");
    expect(storedAnywhere().some((value) => value.includes("access-1"))).toBe(false);
  });

  it("restores the session on page load from the cookie (a refresh with no token sent)", async () => {
    const call = vi.fn(async () => pair(2));
    await restoreSession(call);
    expect(call).toHaveBeenCalledWith(); // the cookie travels; this page knows no token
    expect(useAuthStore.getState().accessToken).toBe("access-2");
    expect(useAuthStore.getState().status).toBe("signedIn");
  });

  it("is signed out after a load when there is no session to restore", async () => {
    await restoreSession(async () => null);
    expect(useAuthStore.getState().status).toBe("signedOut");
    expect(useAuthStore.getState().accessToken).toBeNull();
  });

  it("restores only once per load", async () => {
    const call = vi.fn(async () => pair(3));
    await restoreSession(call);
    await restoreSession(call);
    expect(call).toHaveBeenCalledTimes(1);
  });

  it("lets a sign-in made during the restore win over the restore's refusal", async () => {
    let refuse: (value: TokenPair | null) => void = () => {};
    const restoring = restoreSession(
      () =>
        new Promise<TokenPair | null>((resolve) => {
          refuse = resolve;
        }),
    );
    useAuthStore.getState().setSession(pair(4)); // the OIDC callback finished first
    refuse(null);
    await restoring;
    expect(useAuthStore.getState().accessToken).toBe("access-4");
    expect(useAuthStore.getState().status).toBe("signedIn");
  });
});

describe("refreshSession", () => {
  beforeEach(() => {
    useAuthStore.getState().setSession(pair(1));
  });

  it("stores the new access token and returns it", async () => {
    await expect(refreshSession(async () => pair(2))).resolves.toBe("access-2");
    expect(useAuthStore.getState().accessToken).toBe("access-2");
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

  it("refreshes under the cross-tab lock, so tabs sharing the cookie take turns", async () => {
    const order: string[] = [];
    const lock = async <T>(work: () => Promise<T>): Promise<T> => {
      order.push("locked");
      const result = await work();
      order.push("released");
      return result;
    };
    await refreshSession(async () => {
      order.push("refresh");
      return pair(5);
    }, lock);
    expect(order).toEqual(["locked", "refresh", "released"]);
  });

  it("signs out when the server refuses the cookie", async () => {
    await expect(refreshSession(async () => null)).resolves.toBeNull();
    expect(useAuthStore.getState().accessToken).toBeNull();
    expect(useAuthStore.getState().status).toBe("signedOut");
  });

  it("signs out when the server cannot be reached", async () => {
    await expect(
      refreshSession(async () => {
        throw new TypeError("network down");
      }),
    ).resolves.toBeNull();
    expect(useAuthStore.getState().status).toBe("signedOut");
  });
});
