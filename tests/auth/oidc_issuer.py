"""A local OpenID Connect issuer for tests: real HTTP metadata and JWKS, tokens on demand,
and the authorization code flow with PKCE as an identity provider runs it.

`LocalIssuer` holds its own RSA-2048 signing key (rotatable), serves
`/.well-known/openid-configuration` and `/jwks` from a `ThreadingHTTPServer` on a free
127.0.0.1 port in a background thread, and mints ID tokens, including the malformed kinds an
attacker would send (foreign key, `alg: none`, HS256 with the public key as secret). The
session-scoped `local_issuer` fixture yields a running one; tests that rotate its key or stop
it should build their own instead, so the shared one stays predictable.

The code flow: `GET /authorize` checks the request (client id, `response_type=code`, an S256
`code_challenge`) and shows a sign-in form; posting an email of one of its `accounts`
redirects to the `redirect_uri` with a single-use `code` and the `state`. `POST /token`
redeems the code only with the client's secret (when it has one), the same `redirect_uri`
and a `code_verifier` whose S256 hash is the challenge, and answers an ID token carrying the
nonce and the account's `groups` and `roles`. Run as a program
(`python -m tests.auth.oidc_issuer --accounts '[...]'`) it serves until stopped and prints
`ISSUER <url>`, for the browser tests (web/e2e).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import AllowedPrivateKeys

from apiary.config import OIDCSettings

DEFAULT_AUDIENCE = "apiary-test"
CODE_TTL_S = 60
# The role maps of the test settings: for users of IdP tenant `tid-mapped` only.
MAPPED_TID = "tid-mapped"
GROUP_ADMINS = "6f1c3a52-0000-4000-8000-00000000a0a0"  # an Azure AD group object id
GROUP_DEVELOPERS = "6f1c3a52-0000-4000-8000-00000000d0d0"
OIDC_ROLE_MAPS: dict[str, dict[str, Any]] = {
    MAPPED_TID: {
        GROUP_ADMINS: "tenant_admin",
        GROUP_DEVELOPERS: "developer",
        "Apiary.Billing": "billing_admin",  # an app role's value
    }
}


@dataclass
class Account:
    """A person the issuer signs in; `groups` and `roles` go into their ID tokens as Azure AD
    puts group object ids and app role values. `groups_overage`: too many groups to list, so
    the token says where to find them instead (`_claim_names`), as Azure AD does past 200."""

    email: str
    sub: str
    tid: str = "tid-1"
    name: str = "Ada Example"
    groups: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    groups_overage: bool = False


@dataclass(frozen=True)
class _Grant:
    account: Account
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    expires_at: float


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier (RFC 7636 4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


class LocalIssuer:
    """An OIDC issuer on 127.0.0.1; `start()`/`stop()` or use it as a context manager."""

    def __init__(
        self, *, client_id: str = DEFAULT_AUDIENCE, client_secret: str | None = None
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.accounts: dict[str, Account] = {}
        self._grants: dict[str, _Grant] = {}
        self._grants_lock = threading.Lock()
        self.token_requests = 0
        self._key = new_rsa_key()
        self._kid = uuid.uuid4().hex
        self._published: dict[str, rsa.RSAPublicKey] = {self._kid: self._key.public_key()}
        self._server: ThreadingHTTPServer | None = None
        self._url: str | None = None  # kept after stop() so "issuer down" tests can aim at it
        self._thread: threading.Thread | None = None
        self.jwks_requests = 0
        self.metadata_requests = 0

    # -- server -------------------------------------------------------------------------

    def start(self, port: int = 0) -> LocalIssuer:
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self._url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-oidc-issuer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; the URL stays known, so verifiers see a refused connection."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def issuer(self) -> str:
        return self._base_url

    @property
    def jwks_uri(self) -> str:
        return f"{self._base_url}/jwks"

    @property
    def _base_url(self) -> str:
        if self._url is None:
            raise RuntimeError("LocalIssuer was never started")
        return self._url

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "authorization_endpoint": f"{self._base_url}/authorize",
            "token_endpoint": f"{self._base_url}/token",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        }

    # -- the authorization code flow ------------------------------------------------------

    def add_account(self, account: Account) -> Account:
        self.accounts[account.email.lower()] = account
        return account

    def _authorize_problem(self, params: dict[str, str]) -> str | None:
        """Why an authorization request is refused, or None."""
        if params.get("client_id") != self.client_id:
            return "unknown client_id"
        if params.get("response_type") != "code":
            return "unsupported response_type: only code"
        if not params.get("redirect_uri", "").startswith(("http://", "https://")):
            return "missing redirect_uri"
        if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
            return "PKCE required: code_challenge with code_challenge_method=S256"
        if "openid" not in params.get("scope", "").split():
            return "the openid scope is required"
        return None

    def _sign_in_form(self, params: dict[str, str]) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in params.items()
        )
        return (
            "<!doctype html><title>Local identity provider</title>"
            "<h1>Sign in to the local identity provider</h1>"
            f'<form method="post" action="/authorize">{hidden}'
            '<label for="email">Email</label> <input id="email" name="email" type="email">'
            ' <button type="submit">Continue</button></form>'
        )

    def _grant(self, params: dict[str, str], account: Account) -> str:
        code = secrets.token_urlsafe(24)
        with self._grants_lock:
            self._grants[code] = _Grant(
                account=account,
                client_id=params["client_id"],
                redirect_uri=params["redirect_uri"],
                code_challenge=params["code_challenge"],
                nonce=params.get("nonce"),
                expires_at=time.time() + CODE_TTL_S,
            )
        query = urlencode(
            {"code": code, **({"state": params["state"]} if "state" in params else {})}
        )
        separator = "&" if "?" in params["redirect_uri"] else "?"
        return f"{params['redirect_uri']}{separator}{query}"

    def _redeem(
        self, form: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            user, _, password = decoded.partition(":")
            client_id, secret = unquote(user), unquote(password)
        if client_id != self.client_id:
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        if self.client_secret is not None and not hmac.compare_digest(
            secret or "", self.client_secret
        ):
            return 401, {"error": "invalid_client", "error_description": "client secret wrong"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._grants_lock:
            grant = self._grants.pop(form.get("code", ""), None)  # single use
        if grant is None or grant.expires_at < time.time():
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
        verifier = form.get("code_verifier", "")
        if not verifier or not hmac.compare_digest(s256(verifier), grant.code_challenge):
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        account = grant.account
        extra: dict[str, Any] = {"name": account.name, "nonce": grant.nonce}
        if account.groups_overage:
            extra["_claim_names"] = {"groups": "src1"}
            extra["_claim_sources"] = {"src1": {"endpoint": f"{self._base_url}/groups"}}
        elif account.groups:
            extra["groups"] = list(account.groups)
        if account.roles:
            extra["roles"] = list(account.roles)
        id_token = self.token(
            sub=account.sub, email=account.email, tid=account.tid, aud=client_id, extra=extra
        )
        return 200, {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "openid email profile",
            "id_token": id_token,
        }

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, public_key in self._published.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/.well-known/openid-configuration":
                    issuer.metadata_requests += 1
                    self._send_json(issuer.metadata())
                elif path == "/jwks":
                    issuer.jwks_requests += 1
                    self._send_json(issuer.jwks())
                elif path == "/authorize":
                    params = _single(parse_qs(query))
                    problem = issuer._authorize_problem(params)
                    if problem is not None:
                        self._send_html(400, f"<p>Refused: {html.escape(problem)}</p>")
                    else:
                        self._send_html(200, issuer._sign_in_form(params))
                else:
                    self.send_error(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = _single(parse_qs(self.rfile.read(length).decode()))
                if self.path == "/authorize":
                    email = form.pop("email", "").strip().lower()
                    problem = issuer._authorize_problem(form)
                    account = issuer.accounts.get(email)
                    if problem is not None or account is None:
                        self._send_html(
                            400, f"<p>Refused: {html.escape(problem or 'no such account')}</p>"
                        )
                        return
                    self.send_response(302)
                    self.send_header("Location", issuer._grant(form, account))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/token":
                    issuer.token_requests += 1
                    status, body = issuer._redeem(form, self.headers.get("Authorization"))
                    self._send_json(body, status)
                else:
                    self.send_error(404)

            def _send_json(self, body: dict[str, Any], status: int = 200) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("Cache-Control", "no-store")
                # Browsers read the discovery document from the dashboard's origin.
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(raw)

            def _send_html(self, status: int, body: str) -> None:
                raw = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        return Handler

    # -- keys ---------------------------------------------------------------------------

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def rotate_key(self, *, keep_previous: bool = False) -> str:
        """Sign with a fresh key under a new kid; returns the new kid."""
        self._key = new_rsa_key()
        self._kid = uuid.uuid4().hex
        published = dict(self._published) if keep_previous else {}
        published[self._kid] = self._key.public_key()
        self._published = published  # swapped whole: the server thread reads it
        return self._kid

    # -- tokens -------------------------------------------------------------------------

    def settings(self, audience: str = DEFAULT_AUDIENCE, **kw: Any) -> OIDCSettings:
        return OIDCSettings(issuer=self.issuer, audience=audience, **kw)

    def claims(
        self,
        *,
        sub: str | None = "user-1",
        email: str | None = "a@example.com",
        tid: str | None = "tid-1",
        aud: str | list[str] = DEFAULT_AUDIENCE,
        exp_in: int = 300,
        iat: int | None = None,
        extra: dict[str, Any] | None = None,
        issuer: str | None = None,
    ) -> dict[str, Any]:
        """ID token claims; a None argument (or a None value in `extra`) leaves the claim out."""
        now = int(time.time())
        issued_at = now if iat is None else iat
        claims: dict[str, Any] = {
            "iss": self.issuer if issuer is None else issuer,
            "aud": aud,
            "sub": sub,
            "email": email,
            "tid": tid,
            "iat": issued_at,
            "exp": now + exp_in,
            "name": "Ada Example",
            **(extra or {}),
        }
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self,
        *,
        sub: str | None = "user-1",
        email: str | None = "a@example.com",
        tid: str | None = "tid-1",
        aud: str | list[str] = DEFAULT_AUDIENCE,
        exp_in: int = 300,
        iat: int | None = None,
        alg: str = "RS256",
        key: AllowedPrivateKeys | None = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
        issuer: str | None = None,
    ) -> str:
        """A signed ID token; `key` signs in place of the issuer's own (wrong-signature cases)."""
        claims = self.claims(
            sub=sub,
            email=email,
            tid=tid,
            aud=aud,
            exp_in=exp_in,
            iat=iat,
            extra=extra,
            issuer=issuer,
        )
        signing_key = self._key if key is None else key
        return jwt.encode(
            claims, signing_key, algorithm=alg, headers={"kid": self._kid if kid is None else kid}
        )

    def unsigned_token(self, *, kid: str | None = None, **claims_kw: Any) -> str:
        """An `alg: none` token with an empty signature, as an attacker would craft it."""
        header = {"alg": "none", "typ": "JWT", "kid": self._kid if kid is None else kid}
        return f"{_segment(header)}.{_segment(self.claims(**claims_kw))}."

    def hmac_token(self, secret: bytes, *, kid: str | None = None, **claims_kw: Any) -> str:
        """An HS256 token keyed with `secret`; pass `public_key_pem` for key confusion.

        Built by hand because PyJWT refuses PEM keys as HMAC secrets, which is the point.
        """
        header = {"alg": "HS256", "typ": "JWT", "kid": self._kid if kid is None else kid}
        signing_input = f"{_segment(header)}.{_segment(self.claims(**claims_kw))}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(mac)}"


@dataclass(frozen=True)
class BrowserAttempt:
    """What a dashboard keeps for one sign-in attempt: the secrets it sends the server."""

    redirect_uri: str
    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    code_verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))


async def sign_in_at_issuer(
    issuer: LocalIssuer, attempt: BrowserAttempt, *, email: str, client_id: str | None = None
) -> str:
    """Do what a browser does at the issuer: open the authorization URL with the attempt's
    S256 challenge, submit the sign-in form, follow nothing; the callback's code."""
    params = {
        "client_id": client_id or issuer.client_id,
        "response_type": "code",
        "scope": "openid email profile",
        "redirect_uri": attempt.redirect_uri,
        "state": attempt.state,
        "nonce": attempt.nonce,
        "code_challenge": s256(attempt.code_verifier),
        "code_challenge_method": "S256",
    }
    async with httpx.AsyncClient() as http:
        page = await http.get(f"{issuer.issuer}/authorize", params=params)
        assert page.status_code == 200, page.text
        answer = await http.post(f"{issuer.issuer}/authorize", data={**params, "email": email})
    assert answer.status_code == 302, answer.text
    callback = parse_qs(urlsplit(answer.headers["location"]).query)
    assert callback["state"] == [attempt.state]
    return callback["code"][0]


def _single(values: dict[str, list[str]]) -> dict[str, str]:
    return {name: found[0] for name, found in values.items() if found}


@pytest.fixture(scope="session")
def local_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", default=DEFAULT_AUDIENCE)
    parser.add_argument("--client-secret", default=None)
    parser.add_argument("--accounts", default="[]", help="JSON list of Account fields")
    args = parser.parse_args(argv)
    issuer = LocalIssuer(client_id=args.client_id, client_secret=args.client_secret)
    for fields in json.loads(args.accounts):
        issuer.add_account(Account(**fields))
    issuer.start(args.port)
    print(f"ISSUER {issuer.issuer}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        issuer.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
