"""A local Azure Key Vault (keys: get, wrapKey, unwrapKey) and the Entra token endpoint it
sends clients to, reached by the real azure-keyvault-keys and azure-identity SDKs under
their real host names.

The SDKs are not stubbed: a client is pointed at `https://<vault>.vault.azure.net` and
`https://login.microsoftonline.com` as in production, and `HTTPS_PROXY` takes it to a
CONNECT proxy here that tunnels every connection to one TLS server holding a certificate
for both names (trusted through `SSL_CERT_FILE`). So the Key Vault challenge protocol runs
as against Azure: the first request is answered 401 with a `WWW-Authenticate` challenge
naming the tenant and `https://vault.azure.net`, the SDK checks that resource against the
vault's host, gets a token for `https://vault.azure.net/.default` with the client secret,
and sends the request again with it. Keys are RSA-2048 and never leave this server; a key
can get a new version (`rotate`) and a version can be disabled (`disable`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.tls import self_signed_certificate

VAULT_HOST = "apiary-test.vault.azure.net"
LOGIN_HOST = "login.microsoftonline.com"
TENANT = "00000000-0000-0000-0000-0000000000cc"
CLIENT_ID = "22222222-2222-2222-2222-2222222222dd"
CLIENT_SECRET = "fake-key-vault-client-secret-do-not-log"
_OAEP_256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass
class _Version:
    key: rsa.RSAPrivateKey
    enabled: bool = True


@dataclass
class FakeKeyVault:
    keys: dict[str, dict[str, _Version]] = field(default_factory=dict)  # name -> version -> key
    latest: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    operations: list[tuple[str, str]] = field(default_factory=list)  # (operation, key id)
    unauthorized: int = 0  # requests refused for want of a valid token (the challenges)

    @property
    def vault_url(self) -> str:
        return f"https://{VAULT_HOST}"

    def create_key(self, name: str) -> str:
        """A key (or a new version of it); its versioned identifier."""
        version = secrets.token_hex(16)
        self.keys.setdefault(name, {})[version] = _Version(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        self.latest[name] = version
        return f"{self.vault_url}/keys/{name}/{version}"

    rotate = create_key

    def disable(self, key_id: str) -> None:
        name, version = key_id.rsplit("/", 2)[-2:]
        self.keys[name][version].enabled = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_route("*", "/keys/{tail:.*}", self._keys)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if request.host.split(":")[0] != LOGIN_HOST or request.match_info["tenant"] != TENANT:
            return web.json_response({"error": "invalid_request"}, status=400)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("scope") != "https://vault.azure.net/.default":
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = "kv-" + secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        )

    async def _keys(self, request: web.Request) -> web.Response:
        if request.host.split(":")[0] != VAULT_HOST:
            return web.json_response({"error": {"code": "BadHost"}}, status=400)
        authorization = request.headers.get("Authorization", "")
        if authorization.removeprefix("Bearer ") not in self.tokens:
            self.unauthorized += 1
            challenge = (
                f'Bearer authorization="https://{LOGIN_HOST}/{TENANT}", '
                'resource="https://vault.azure.net"'
            )
            return web.json_response(
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer",
                    }
                },
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        parts = request.match_info["tail"].split("/")
        name = parts[0]
        version = parts[1] if len(parts) > 1 and parts[1] else self.latest.get(name, "")
        found = self.keys.get(name, {}).get(version)
        if found is None:
            return _error(
                404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found"
            )
        if not found.enabled:
            return _error(403, "Forbidden", "Operation is not allowed on a disabled key.")
        kid = f"{self.vault_url}/keys/{name}/{version}"
        operation = parts[2] if len(parts) > 2 else ""
        if request.method == "GET" and not operation:
            self.operations.append(("get", kid))
            public = found.key.public_key().public_numbers()
            return web.json_response(
                {
                    "key": {
                        "kid": kid,
                        "kty": "RSA",
                        "key_ops": ["wrapKey", "unwrapKey"],
                        "n": _b64url(_int_bytes(public.n)),
                        "e": _b64url(_int_bytes(public.e)),
                    },
                    "attributes": {"enabled": True, "recoveryLevel": "Recoverable+Purgeable"},
                }
            )
        if request.method == "POST" and operation in ("wrapkey", "unwrapkey"):
            body = await request.json()
            if body.get("alg") != "RSA-OAEP-256":
                return _error(400, "BadParameter", f"alg {body.get('alg')!r} is not supported")
            value = _unb64url(body["value"])
            self.operations.append((operation, kid))
            if operation == "wrapkey":
                result = found.key.public_key().encrypt(value, _OAEP_256)
            else:
                try:
                    result = found.key.decrypt(value, _OAEP_256)
                except ValueError:
                    return _error(400, "BadParameter", "Unwrap failed")
            return web.json_response({"kid": kid, "value": _b64url(result)})
        return _error(405, "MethodNotAllowed", f"{request.method} {request.path}")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _tunnel(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP CONNECT proxy's one connection: whatever host is asked for, the fake."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"CONNECT "):
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(Exception):
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def key_vault(directory: Path) -> AsyncIterator[tuple[FakeKeyVault, str, Path]]:
    """The fake, the proxy's URL (for HTTPS_PROXY) and the certificate to trust."""
    cert, key = self_signed_certificate(directory, (VAULT_HOST, LOGIN_HOST))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    fake = FakeKeyVault()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy = await asyncio.start_server(
        lambda reader, writer: _tunnel(port, reader, writer), "127.0.0.1", 0
    )
    proxy_port = proxy.sockets[0].getsockname()[1]
    try:
        yield fake, f"http://127.0.0.1:{proxy_port}", cert
    finally:
        proxy.close()
        await runner.cleanup()
