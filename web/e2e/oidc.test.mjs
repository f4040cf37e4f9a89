// OIDC sign-in in a real Chromium: the dashboard sends the browser to the local identity
// provider (tests/auth/oidc_issuer.py, run by harness.mjs) with the authorization code flow
// and PKCE, Apiary's server redeems the code, and the session then lives in memory and in an
// httpOnly cookie: a reload stays signed in, and no token is left in the page's storage.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { ARTIFACTS, OIDC_CLIENT, OIDC_USER, TENANT_ADMIN, startStack } from "./harness.mjs";

let stack;
let context;
let page;
const cspViolations = [];
// Every authorization request the browser made to the identity provider.
const authorizationRequests = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  stack = await startStack({ oidc: true });
  context = await stack.browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on("console", (message) => {
    if (message.text().includes("Content Security Policy")) cspViolations.push(message.text());
  });
  page.on("request", (request) => {
    if (request.url().startsWith(`${stack.issuer}/authorize?`)) {
      authorizationRequests.push(new URL(request.url()));
    }
  });
});

after(async () => {
  await stack?.stop();
});

// The cookies the browser would send to the refresh endpoint (the refresh cookie's path).
const authCookie = async () =>
  (await context.cookies(`${stack.baseUrl}/api/v1/auth/refresh`)).find(
    (cookie) => cookie.name === "apiary_refresh",
  );

const shot = (name) =>
  page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

/** What the page's scripts could read: both web storages and document.cookie. */
const readableByScripts = () =>
  page.evaluate(() => ({
    local: Object.fromEntries(Object.entries(localStorage)),
    session: Object.fromEntries(Object.entries(sessionStorage)),
    cookie: document.cookie,
  }));

function assertNoTokens(readable) {
  const text = JSON.stringify(readable);
  assert.doesNotMatch(text, /eyJ[\w-]+\.eyJ/, "no JWT (access or ID token) is readable");
  assert.doesNotMatch(text, /apr_/, "no refresh token is readable");
}

test("signing in through the identity provider uses the code flow with PKCE", async () => {
  await page.goto(`${stack.baseUrl}/sign-in`);
  await page.getByRole("button", { name: "Sign in with your organisation (OIDC)" }).click();
  await page.getByRole("heading", { name: "Sign in to the local identity provider" }).waitFor();
  await shot("oidc-identity-provider");
  await page.getByLabel("Email").fill(OIDC_USER.email);
  await page.getByRole("button", { name: "Continue" }).click();
  await page.getByTestId("signed-in-as").waitFor();
  assert.equal(await page.getByTestId("signed-in-as").innerText(), OIDC_USER.email);
  // The IdP group the settings map to tenant_admin made Ada one.
  await page.getByText("Tenant admin", { exact: true }).waitFor();
  await shot("oidc-signed-in");

  assert.equal(authorizationRequests.length, 1);
  const params = authorizationRequests[0].searchParams;
  assert.equal(params.get("response_type"), "code");
  assert.equal(params.get("client_id"), OIDC_CLIENT.id);
  assert.equal(params.get("code_challenge_method"), "S256");
  assert.match(params.get("code_challenge"), /^[\w-]{43}$/);
  assert.ok(params.get("state"));
  assert.ok(params.get("nonce"));
  assert.equal(params.get("redirect_uri"), `${stack.baseUrl}/auth/oidc/callback`);
});

test("the session is an httpOnly cookie, and no token is in the page's storage", async () => {
  assertNoTokens(await readableByScripts());
  const refresh = await authCookie();
  assert.ok(refresh, "the refresh cookie is set");
  assert.equal(refresh.httpOnly, true);
  assert.equal(refresh.sameSite, "Strict");
  assert.equal(refresh.path, "/api/v1/auth");
});

test("a reload stays signed in, through the refresh cookie", async () => {
  const before = await authCookie();
  await page.reload();
  await page.getByTestId("signed-in-as").waitFor();
  assert.equal(await page.getByTestId("signed-in-as").innerText(), OIDC_USER.email);
  assert.equal(new URL(page.url()).pathname, "/");
  const afterReload = await authCookie();
  assert.notEqual(afterReload.value, before.value, "the refresh token rotated");
  assertNoTokens(await readableByScripts());
  // Pages keep working with the access token held in memory.
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByRole("heading", { name: "API keys" }).waitFor();
});

test("signing out ends the session: a reload shows the sign-in page", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to Apiary" }).waitFor();
  assert.equal(await authCookie(), undefined);
  await page.reload();
  await page.getByRole("heading", { name: "Sign in to Apiary" }).waitFor();
});

test("a password sign-in uses the same cookie and survives a reload", async () => {
  await page.getByLabel("Email").fill(TENANT_ADMIN.email);
  await page.getByLabel("Password").fill(TENANT_ADMIN.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByTestId("signed-in-as").waitFor();
  assert.ok(await authCookie(), "the refresh cookie is set");
  await page.reload();
  await page.getByTestId("signed-in-as").waitFor();
  assert.equal(await page.getByTestId("signed-in-as").innerText(), TENANT_ADMIN.email);
  assertNoTokens(await readableByScripts());
});

test("the flow ran under the server's Content-Security-Policy without a refusal", async () => {
  const response = await page.goto(`${stack.baseUrl}/`);
  assert.match(response.headers()["content-security-policy"], /connect-src 'self' http:\/\/127/);
  await page.getByTestId("signed-in-as").waitFor();
  assert.deepEqual(cspViolations, []);
});
