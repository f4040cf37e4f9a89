"""A local OpenID Connect issuer for tests: real HTTP metadata and JWKS, tokens on demand.

`LocalIssuer` holds its own RSA-2048 signing key (rotatable), serves
`/.well-known/openid-configuration` and `/jwks` from a `ThreadingHTTPServer` on a free
127.0.0.1 port in a background thread, and mints ID tokens, including the malformed kinds an
attacker would send (foreign key, `alg: none`, HS256 with the public key as secret). The
session-scoped `local_issuer` fixture yields a running one; tests that rotate its key or stop
it should build their own instead, so the shared one stays predictable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import AllowedPrivateKeys

from apiary.config import OIDCSettings

DEFAULT_AUDIENCE = "apiary-test"


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


class LocalIssuer:
    """An OIDC issuer on 127.0.0.1; `start()`/`stop()` or use it as a context manager."""

    def __init__(self) -> None:
        self._key = new_rsa_key()
        self._kid = uuid.uuid4().hex
        self._published: dict[str, rsa.RSAPublicKey] = {self._kid: self._key.public_key()}
        self._server: ThreadingHTTPServer | None = None
        self._url: str | None = None  # kept after stop() so "issuer down" tests can aim at it
        self._thread: threading.Thread | None = None
        self.jwks_requests = 0
        self.metadata_requests = 0

    # -- server -------------------------------------------------------------------------

    def start(self) -> LocalIssuer:
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
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
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
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
                if self.path == "/.well-known/openid-configuration":
                    issuer.metadata_requests += 1
                    self._send_json(issuer.metadata())
                elif self.path == "/jwks":
                    issuer.jwks_requests += 1
                    self._send_json(issuer.jwks())
                else:
                    self.send_error(404)

            def _send_json(self, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
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


@pytest.fixture(scope="session")
def local_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer
