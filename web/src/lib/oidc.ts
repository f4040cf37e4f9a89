// OIDC sign-in in the browser: the implicit flow's ID token (response_type=id_token), which
// the server then verifies (signature, issuer, audience, expiry) at POST /api/v1/auth/oidc.
// The state guards against forged callbacks; the nonce binds the token to this attempt.

const STORAGE_KEY = "apiary.oidc";

export function callbackUrl(origin: string = window.location.origin): string {
  return `${origin}/auth/oidc/callback`;
}

export async function startOidcSignIn(config: {
  issuer: string;
  client_id: string;
}): Promise<void> {
  const discovery = `${config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const response = await fetch(discovery);
  if (!response.ok) throw new Error(`the identity provider answered ${response.status}`);
  const metadata = (await response.json()) as { authorization_endpoint?: string };
  if (!metadata.authorization_endpoint)
    throw new Error("the issuer names no authorization endpoint");
  const state = randomToken();
  const nonce = randomToken();
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ state, nonce }));
  const url = new URL(metadata.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: config.client_id,
    response_type: "id_token",
    response_mode: "fragment",
    scope: "openid email profile",
    redirect_uri: callbackUrl(),
    state,
    nonce,
  }).toString();
  window.location.assign(url.toString());
}

/** The ID token from the callback's fragment, after checking state and nonce. */
export function readOidcCallback(hash: string): string {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const error = params.get("error_description") ?? params.get("error");
  if (error) throw new Error(error);
  const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null") as {
    state: string;
    nonce: string;
  } | null;
  sessionStorage.removeItem(STORAGE_KEY);
  const idToken = params.get("id_token");
  if (!saved || params.get("state") !== saved.state || !idToken) {
    throw new Error("this sign-in was not started here; please try again");
  }
  if (tokenNonce(idToken) !== saved.nonce) throw new Error("the ID token's nonce does not match");
  return idToken;
}

function tokenNonce(idToken: string): string | undefined {
  const payload = idToken.split(".")[1];
  if (!payload) return undefined;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    return (JSON.parse(json) as { nonce?: string }).nonce;
  } catch {
    return undefined;
  }
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
