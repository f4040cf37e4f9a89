// OIDC sign-in in the browser: the authorization code flow with PKCE (S256). This page
// sends the user to the identity provider with a fresh state, nonce and code challenge, and
// keeps the state, nonce and code verifier in sessionStorage (this tab, this attempt). On
// the way back it checks the state and hands the code, verifier and nonce to Apiary's server,
// which redeems the code at the IdP's token endpoint and verifies the ID token (signature,
// issuer, audience, expiry, nonce): no token of the IdP ever reaches this page.

const STORAGE_KEY = "apiary.oidc";

export interface OidcClientConfig {
  issuer: string;
  client_id: string;
  scope?: string;
}

/** What the server needs to finish a sign-in (POST /api/v1/auth/oidc/code). */
export interface OidcCodeExchange {
  code: string;
  code_verifier: string;
  redirect_uri: string;
  nonce: string;
}

interface SavedAttempt {
  state: string;
  nonce: string;
  codeVerifier: string;
  redirectUri: string;
}

export function callbackUrl(origin: string = window.location.origin): string {
  return `${origin}/auth/oidc/callback`;
}

/** The S256 code challenge of a verifier: base64url(SHA-256(verifier)), RFC 7636 4.2. */
export async function codeChallenge(verifier: string): Promise<string> {
  if (!crypto.subtle) {
    throw new Error("OIDC sign-in needs the dashboard served over HTTPS (or on localhost)");
  }
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64Url(new Uint8Array(digest));
}

/**
 * The identity provider's authorization URL for a new attempt, whose secrets are saved for
 * the callback. The endpoint comes from the issuer's discovery document.
 */
export async function authorizationUrl(
  config: OidcClientConfig,
  { fetchImpl = fetch, origin = window.location.origin } = {},
): Promise<string> {
  const discovery = `${config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const response = await fetchImpl(discovery);
  if (!response.ok) throw new Error(`the identity provider answered ${response.status}`);
  const metadata = (await response.json()) as { authorization_endpoint?: string };
  if (!metadata.authorization_endpoint)
    throw new Error("the issuer names no authorization endpoint");
  const attempt: SavedAttempt = {
    state: randomToken(16),
    nonce: randomToken(16),
    // 32 random bytes: a 43-character verifier, the shortest RFC 7636 allows.
    codeVerifier: randomToken(32),
    redirectUri: callbackUrl(origin),
  };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(attempt));
  const url = new URL(metadata.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: config.client_id,
    response_type: "code",
    scope: config.scope ?? "openid email profile",
    redirect_uri: attempt.redirectUri,
    state: attempt.state,
    nonce: attempt.nonce,
    code_challenge: await codeChallenge(attempt.codeVerifier),
    code_challenge_method: "S256",
  }).toString();
  return url.toString();
}

export async function startOidcSignIn(config: OidcClientConfig): Promise<void> {
  window.location.assign(await authorizationUrl(config));
}

/**
 * The code from the callback's query, with this attempt's verifier and nonce, after
 * checking the state. Works once: the saved attempt is gone after the first call.
 */
export function readOidcCallback(search: string): OidcCodeExchange {
  const params = new URLSearchParams(search);
  const error = params.get("error_description") ?? params.get("error");
  const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null") as SavedAttempt | null;
  sessionStorage.removeItem(STORAGE_KEY);
  if (error) throw new Error(error);
  const code = params.get("code");
  if (!saved || params.get("state") !== saved.state || !code) {
    throw new Error("this sign-in was not started here; please try again");
  }
  return {
    code,
    code_verifier: saved.codeVerifier,
    redirect_uri: saved.redirectUri,
    nonce: saved.nonce,
  };
}

function randomToken(bytes: number): string {
  return base64Url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function base64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
