"""The real `apiary` command, run as a subprocess against a fresh embedded (SQLite) data dir:
help everywhere, first-run init, tenants and keys made from a shell, audit verification, and
a served API that accepts what the shell printed.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.stripe import API_KEY as STRIPE_KEY
from tests.fakes.stripe import FakeStripe

APIARY_BIN = Path(sys.executable).parent / "apiary"
MEMBER_ROLES = ("billing_admin", "developer", "tenant_admin", "viewer")


def _environment(data_dir: Path, **extra: str) -> dict[str, str]:
    # No APIARY_ variable from the caller's shell (a test database URL, Redis) leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def apiary(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(APIARY_BIN), *args],
        env=_environment(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def apiary_json(data_dir: Path, *args: str) -> dict[str, Any]:
    result = apiary(data_dir, *args)
    assert result.returncode == 0, result.stderr
    value: dict[str, Any] = orjson.loads(result.stdout)
    return value


def _one_time_password(init_output: str) -> str:
    passwords = [
        line.split(":", 1)[1].strip()
        for line in init_output.splitlines()
        if line.strip().startswith("password:")
    ]
    assert len(passwords) == 1, init_output
    return passwords[0]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@dataclass
class Installation:
    """A data dir after `apiary init` and `admin create-tenant acme`, shared by this module's
    tests (each CLI run costs a second or more); tests add only uniquely named things."""

    data_dir: Path
    super_admin_password: str
    acme: dict[str, Any]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    init = apiary(data_dir, "init")
    assert init.returncode == 0, init.stderr
    acme = apiary_json(data_dir, "admin", "create-tenant", "acme", "--admin-email", "a@acme.io")
    return Installation(data_dir, _one_time_password(init.stdout), acme)


@pytest.mark.parametrize(
    ("command", "lists"),
    [
        ([], ["serve", "migrate", "init", "admin", "audit", "billing"]),
        (["serve"], ["--host", "--port"]),
        (["migrate"], ["--downgrade"]),
        (["init"], []),
        (["admin"], ["create-tenant", "create-api-key"]),
        (["admin", "create-tenant"], ["name", "--admin-email", "--admin-password", "--plan"]),
        (["admin", "create-api-key"], ["--tenant", "--role", "--name"]),
        (["audit"], ["verify"]),
        (["audit", "verify"], []),
        (["billing"], ["close", "sync"]),
        (["billing", "close"], ["--period"]),
        (["billing", "sync"], ["Stripe"]),
    ],
    ids=lambda value: (" ".join(value) or "apiary") if isinstance(value, list) else "",
)
def test_help_works_for_every_command(data_dir: Path, command: list[str], lists: list[str]) -> None:
    result = apiary(data_dir, *command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "Usage: " + " ".join(["apiary", *command]) in text
    for word in lists:
        assert word in text
    assert not data_dir.exists()  # asking for help touches nothing


def test_init_prints_the_super_admin_password_once(data_dir: Path) -> None:
    first = apiary(data_dir, "init")
    assert first.returncode == 0, first.stderr
    assert "admin@apiary.local" in first.stdout
    password = _one_time_password(first.stdout)
    assert len(password) >= 16
    assert password not in first.stderr

    # What init wrote holds password hashes: this user's alone, whatever
    # the umask (0022 here, which would leave files 0644).
    assert (data_dir.stat().st_mode & 0o777) == 0o700
    assert ((data_dir / "apiary.db").stat().st_mode & 0o777) == 0o600

    second = apiary(data_dir, "init")
    assert second.returncode == 0, second.stderr
    assert password not in second.stdout + second.stderr
    assert "password:" not in second.stdout
    assert "already exists" in second.stdout


def test_create_tenant_prints_ids_and_a_generated_password(installed: Installation) -> None:
    created = installed.acme  # made with --admin-email and no --admin-password
    uuid.UUID(created["tenant_id"])
    uuid.UUID(created["admin_user_id"])
    assert created["tenant_name"] == "acme"
    assert created["admin_email"] == "a@acme.io"
    assert isinstance(created["admin_password"], str)
    assert len(created["admin_password"]) >= 12


def test_create_tenant_with_a_given_password_does_not_echo_it(installed: Installation) -> None:
    password = "a chosen passphrase 123"
    result = apiary(
        installed.data_dir,
        "admin",
        "create-tenant",
        "globex",
        "--admin-email",
        "Boss@Globex.io",
        "--admin-password",
        password,
    )
    assert result.returncode == 0, result.stderr
    created = orjson.loads(result.stdout)
    uuid.UUID(created["tenant_id"])
    assert created["tenant_id"] != installed.acme["tenant_id"]
    assert created["admin_email"] == "boss@globex.io"
    assert "admin_password" not in created
    assert password not in result.stdout + result.stderr


def test_duplicate_tenant_name_fails_with_one_line(installed: Installation) -> None:
    again = apiary(
        installed.data_dir, "admin", "create-tenant", "acme", "--admin-email", "b@acme.io"
    )
    assert again.returncode != 0
    assert again.stdout == ""
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1, again.stderr
    assert "'acme' already exists" in lines[0]


def test_invalid_tenant_input_fails_with_one_line(installed: Installation) -> None:
    result = apiary(
        installed.data_dir, "admin", "create-tenant", "initech", "--admin-email", "not-an-email"
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "admin_email" in lines[0]


def test_create_api_key_prints_the_key(installed: Installation) -> None:
    created = apiary_json(
        installed.data_dir, "admin", "create-api-key", "--tenant", "acme", "--role", "developer"
    )
    assert created["key"].startswith("apy_")
    assert created["key"].startswith(f"apy_{created['prefix']}")
    assert created["role"] == "developer"
    assert created["tenant_id"] == installed.acme["tenant_id"]
    # The tenant may be named by id as well as by name.
    by_id = apiary_json(
        installed.data_dir,
        "admin",
        "create-api-key",
        "--tenant",
        installed.acme["tenant_id"],
        "--role",
        "viewer",
    )
    assert by_id["role"] == "viewer"
    assert by_id["key"] != created["key"]


def test_create_api_key_with_a_bad_role_lists_the_roles(installed: Installation) -> None:
    # The platform role cannot be minted into a tenant key from the shell either.
    result = apiary(
        installed.data_dir, "admin", "create-api-key", "--tenant", "acme", "--role", "super_admin"
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for allowed in MEMBER_ROLES:
        assert allowed in result.stderr


def test_create_api_key_for_an_unknown_tenant_fails(installed: Installation) -> None:
    result = apiary(
        installed.data_dir, "admin", "create-api-key", "--tenant", "ghost", "--role", "viewer"
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ghost" in lines[0]


def test_audit_verify_reports_the_entries(installed: Installation) -> None:
    before = apiary_json(installed.data_dir, "audit", "verify")
    assert before["ok"] is True
    assert before["broken_seq"] is None
    # init and create-tenant were recorded: the super admin, the tenant, its admin.
    assert before["entries"] >= 3
    apiary_json(
        installed.data_dir, "admin", "create-api-key", "--tenant", "acme", "--role", "viewer"
    )
    after = apiary(installed.data_dir, "audit", "verify")
    assert after.returncode == 0, after.stderr
    report = orjson.loads(after.stdout)
    assert report["ok"] is True
    assert report["entries"] == before["entries"] + 1  # the key's creation was recorded


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    stdout: Path
    stderr: Path
    pid: int = 0

    def logs(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


@contextmanager
def serving(
    data_dir: Path, *, open_files_soft_limit: int | None = None, **env: str
) -> Iterator[Server]:
    """`apiary serve` on a free port until the block ends; waits for /healthz. With
    `open_files_soft_limit`, it starts with that soft limit on open files."""
    port = _free_port()
    server = Server(
        base_url=f"http://127.0.0.1:{port}",
        stdout=data_dir.parent / "serve.out",
        stderr=data_dir.parent / "serve.err",
    )
    with server.stdout.open("wb") as out, server.stderr.open("wb") as err:

        def limit_open_files() -> None:
            if open_files_soft_limit is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files_soft_limit, hard))

        process = subprocess.Popen(
            [str(APIARY_BIN), "serve", "--port", str(port)],
            env=_environment(data_dir, **env),
            stdout=out,
            stderr=err,
            preexec_fn=limit_open_files,
        )
        server.pid = process.pid
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, f"server exited early:\n{server.logs()}"
                try:
                    if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"server never answered:\n{server.logs()}"
                time.sleep(0.2)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def test_serve_lifts_its_open_files_limit(installed: Installation) -> None:
    """Ten 100-agent swarms hold a thousand upstream connections: a server started with a
    low soft limit on open files (many systems give 1024; here 256) lifts it to the hard
    limit instead of failing with "Too many open files" mid-swarm."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard > 256, "this test needs a hard limit > 256"
    with serving(installed.data_dir, open_files_soft_limit=256) as server:
        limits = Path(f"/proc/{server.pid}/limits").read_text()
    (line,) = [row for row in limits.splitlines() if row.startswith("Max open files")]
    soft = line.split()[3]
    expected = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert soft in (expected, str(1 << 20)), line


def test_served_api_accepts_the_printed_key_and_password_without_logging_them(
    installed: Installation,
) -> None:
    created = apiary_json(
        installed.data_dir, "admin", "create-api-key", "--tenant", "acme", "--role", "developer"
    )
    password = installed.super_admin_password
    wrong_password = f"wrong-{uuid.uuid4().hex}"
    with (
        serving(installed.data_dir, APIARY_LOG_LEVEL="DEBUG") as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        me = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {created['key']}"})
        assert me.status_code == 200, me.text
        assert me.json()["role"] == "developer"
        assert me.json()["tenant_id"] == installed.acme["tenant_id"]
        forged = created["key"][:-4] + "AAAA"
        assert (
            http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code
            == 401
        )

        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"] == "ok"

        # The super admin's one-time password from `init` signs in ...
        signed_in = http.post(
            "/api/v1/auth/login", json={"email": "admin@apiary.local", "password": password}
        )
        assert signed_in.status_code == 200, signed_in.text
        token = signed_in.json()["access_token"]
        admin = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert admin.json()["role"] == "super_admin"
        refused = http.post(
            "/api/v1/auth/login", json={"email": "admin@apiary.local", "password": wrong_password}
        )
        assert refused.status_code == 401
    logs = server.logs()
    assert "/api/v1/auth/login" in logs  # the requests were logged, ...
    for secret in (password, wrong_password, token, created["key"]):
        assert secret not in logs  # ... but never the secrets sent with them


def test_billing_close_closes_a_month_once(installed: Installation) -> None:
    # acme was created just now, so it has no invoice for a month that ended before it.
    closed = apiary_json(installed.data_dir, "billing", "close", "--period", "2026-01")
    assert closed == {"period": "2026-01", "issued": [], "already_closed": 0, "payments": None}
    bad = apiary(installed.data_dir, "billing", "close", "--period", "2026-13")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --period: '2026-13' is not a month as YYYY-MM"
    future = apiary(installed.data_dir, "billing", "close", "--period", "2999-01")
    assert future.returncode == 1
    assert "has not ended yet" in future.stderr


async def test_billing_sync_puts_tenants_on_stripe_and_fails_while_stripe_is_away(
    data_dir: Path, fake_stripe: FakeStripe
) -> None:
    assert (await _apiary_async(data_dir, "init")).returncode == 0
    made = await _apiary_async(
        data_dir, "admin", "create-tenant", "acme", "--admin-email", "a@acme.io", "--plan", "team"
    )
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(data_dir / "apiary.db") as database:  # as PATCH /admin/plans/team would
        database.execute("UPDATE plans SET stripe_price_id = 'price_team' WHERE key = 'team'")
    stripe_env = {
        "APIARY_BILLING__STRIPE__API_KEY": STRIPE_KEY,
        "APIARY_BILLING__STRIPE__API_BASE": fake_stripe.base_url,
        "APIARY_BILLING__STRIPE__MAX_NETWORK_RETRIES": "0",
    }
    fake_stripe.fail(503)
    away = await _apiary_async(data_dir, "billing", "sync", **stripe_env)
    assert away.returncode == 1  # the subscription waits for Stripe: a schedule retries
    assert "HTTP 503" in orjson.loads(away.stdout)["errors"][0]
    assert STRIPE_KEY not in away.stdout + away.stderr
    fake_stripe.recover()
    synced = await _apiary_async(data_dir, "billing", "sync", **stripe_env)
    assert synced.returncode == 0, synced.stderr
    assert orjson.loads(synced.stdout) == {
        "invoices_synced": 0,
        "invoices_pending": 0,
        "subscriptions_synced": 1,
        "errors": [],
    }
    [subscription] = fake_stripe.subscriptions.values()
    assert subscription["items"]["data"][0]["price"]["id"] == "price_team"


async def _apiary_async(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`apiary` without blocking the event loop (a local server in it must answer)."""
    process = await asyncio.create_subprocess_exec(
        str(APIARY_BIN),
        *args,
        env=_environment(data_dir, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def test_billing_sync_without_stripe_says_billing_is_invoice_only(
    installed: Installation,
) -> None:
    result = apiary(installed.data_dir, "billing", "sync")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: Stripe is not configured (APIARY_BILLING__STRIPE__API_KEY): billing is "
        "invoice only, there is nothing to sync"
    )
