import { beforeEach, describe, expect, it } from "vitest";
import { readOidcCallback } from "./oidc";

const token = (claims: object) =>
  `h.${btoa(JSON.stringify(claims)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}.s`;

describe("readOidcCallback", () => {
  beforeEach(() => {
    sessionStorage.setItem("apiary.oidc", JSON.stringify({ state: "s1", nonce: "n1" }));
  });

  it("returns the ID token when state and nonce match what this browser started", () => {
    const idToken = token({ nonce: "n1", sub: "u" });
    expect(readOidcCallback(`#id_token=${idToken}&state=s1`)).toBe(idToken);
  });

  it("refuses a callback this browser did not start (state mismatch)", () => {
    expect(() => readOidcCallback(`#id_token=${token({ nonce: "n1" })}&state=other`)).toThrow(
      /not started here/,
    );
  });

  it("refuses a token minted for another attempt (nonce mismatch)", () => {
    expect(() => readOidcCallback(`#id_token=${token({ nonce: "n2" })}&state=s1`)).toThrow(/nonce/);
  });

  it("shows the identity provider's error", () => {
    expect(() => readOidcCallback("#error=access_denied&error_description=User+cancelled")).toThrow(
      "User cancelled",
    );
  });

  it("works once: a replayed callback is refused", () => {
    const idToken = token({ nonce: "n1" });
    readOidcCallback(`#id_token=${idToken}&state=s1`);
    expect(() => readOidcCallback(`#id_token=${idToken}&state=s1`)).toThrow(/not started here/);
  });
});
