import { createHash } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { authorizationUrl, codeChallenge, readOidcCallback } from "./oidc";

const ISSUER = "https://idp.example/tenant/v2.0";

const discovery = (metadata: object) => async (url: RequestInfo | URL) => {
  expect(String(url)).toBe(`${ISSUER}/.well-known/openid-configuration`);
  return new Response(JSON.stringify(metadata), { status: 200 });
};

async function startAttempt(): Promise<URL> {
  return new URL(
    await authorizationUrl(
      { issuer: `${ISSUER}/`, client_id: "apiary-web", scope: "openid email profile" },
      {
        fetchImpl: discovery({ authorization_endpoint: `${ISSUER}/authorize?p=1` }),
        origin: "https://apiary.example",
      },
    ),
  );
}

describe("authorizationUrl", () => {
  beforeEach(() => sessionStorage.clear());

  it("asks for a code with an S256 challenge, a state and a nonce", async () => {
    const url = await startAttempt();
    const params = url.searchParams;
    expect(url.origin + url.pathname).toBe(`${ISSUER}/authorize`);
    expect(params.get("response_type")).toBe("code");
    expect(params.get("client_id")).toBe("apiary-web");
    expect(params.get("redirect_uri")).toBe("https://apiary.example/auth/oidc/callback");
    expect(params.get("code_challenge_method")).toBe("S256");
    expect(params.get("id_token")).toBeNull();
    expect(params.get("state")).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(params.get("nonce")).toMatch(/^[A-Za-z0-9_-]{22}$/);
    // The challenge is the hash of the verifier the callback will send, not the verifier.
    const exchange = readOidcCallback(`?code=c1&state=${params.get("state")}`);
    expect(exchange.code_verifier).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(params.get("code_challenge")).toBe(
      createHash("sha256").update(exchange.code_verifier).digest("base64url"),
    );
    expect(params.get("code_challenge")).not.toBe(exchange.code_verifier);
    expect(exchange.nonce).toBe(params.get("nonce"));
  });

  it("draws fresh secrets for every attempt", async () => {
    const first = (await startAttempt()).searchParams;
    const second = (await startAttempt()).searchParams;
    for (const name of ["state", "nonce", "code_challenge"]) {
      expect(first.get(name)).not.toBe(second.get(name));
    }
  });

  it("says so when the issuer names no authorization endpoint", async () => {
    await expect(
      authorizationUrl(
        { issuer: ISSUER, client_id: "apiary-web" },
        { fetchImpl: discovery({}), origin: "https://apiary.example" },
      ),
    ).rejects.toThrow(/no authorization endpoint/);
  });
});

describe("codeChallenge", () => {
  it("is RFC 7636's S256 of the verifier (its appendix B example)", async () => {
    await expect(codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).resolves.toBe(
      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
  });
});

describe("readOidcCallback", () => {
  beforeEach(() => {
    sessionStorage.setItem(
      "apiary.oidc",
      JSON.stringify({
        state: "s1",
        nonce: "n1",
        codeVerifier: "v1",
        redirectUri: "https://apiary.example/auth/oidc/callback",
      }),
    );
  });

  it("returns the code with this attempt's verifier, redirect URI and nonce", () => {
    expect(readOidcCallback("?code=abc&state=s1")).toEqual({
      code: "abc",
      code_verifier: "v1",
      redirect_uri: "https://apiary.example/auth/oidc/callback",
      nonce: "n1",
    });
  });

  it("refuses a callback this browser did not start (state mismatch)", () => {
    expect(() => readOidcCallback("?code=abc&state=other")).toThrow(/not started here/);
  });

  it("refuses a callback without a code", () => {
    expect(() => readOidcCallback("?state=s1")).toThrow(/not started here/);
  });

  it("shows the identity provider's error, and forgets the attempt", () => {
    expect(() => readOidcCallback("?error=access_denied&error_description=User+cancelled")).toThrow(
      "User cancelled",
    );
    expect(sessionStorage.getItem("apiary.oidc")).toBeNull();
  });

  it("works once: a replayed callback is refused", () => {
    readOidcCallback("?code=abc&state=s1");
    expect(() => readOidcCallback("?code=abc&state=s1")).toThrow(/not started here/);
  });
});
