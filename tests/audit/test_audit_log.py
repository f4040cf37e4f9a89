"""The audit log: what gets recorded, who may read it (their tenant's entries only), paging
and filtering, and the hash chain that exposes edits, deletions and forged re-links, both
through the service and through `apiary audit verify` on a tampered database.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from apiary.audit.models import AuditEntry
from apiary.audit.service import (
    GENESIS,
    PRUNE_FLOOR_DAYS,
    ChainReport,
    PruneReport,
    audit_service,
    entry_hash,
    verify_archive,
)
from apiary.authz.permissions import Role
from apiary.db import session_scope
from apiary.runtime import Runtime
from tests.conftest import TEST_DATABASE
from tests.factories import (
    Caller,
    TenantFixture,
    make_api_key,
    make_member,
    make_super_admin,
    make_tenant,
)

both_databases = pytest.mark.both_databases
TRIGGER = "audit_entries_append_only"
APIARY_BIN = Path(sys.executable).parent / "apiary"


async def _entries(
    client: httpx.AsyncClient, caller: Caller, **params: str | int
) -> dict[str, Any]:
    response = await client.get("/api/v1/audit-log", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _only(client: httpx.AsyncClient, caller: Caller, action: str) -> dict[str, Any]:
    body = await _entries(client, caller, action=action)
    assert body["total"] == 1, body
    entry: dict[str, Any] = body["items"][0]
    assert entry["action"] == action
    return entry


async def _verify(runtime: Runtime) -> ChainReport:
    async with runtime.session_factory() as session:
        return await audit_service.verify(session)


async def _seqs(runtime: Runtime) -> list[int]:
    async with runtime.session_factory() as session:
        return list(await session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)))


async def _execute(runtime: Runtime, sql: str, **params: object) -> None:
    """Tamper behind the application's back, as the database's owner could: on PostgreSQL
    the append-only trigger refuses anyone else (test_the_database_refuses_...)."""
    async with runtime.engine.begin() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            await connection.execute(text(f"ALTER TABLE audit_entries DISABLE TRIGGER {TRIGGER}"))
        await connection.execute(text(sql), params)
        if postgres:
            await connection.execute(text(f"ALTER TABLE audit_entries ENABLE TRIGGER {TRIGGER}"))


async def _tenant_with_history(runtime: Runtime, client: httpx.AsyncClient) -> TenantFixture:
    """A tenant whose log has a handful of entries (created, admin added, logins, keys)."""
    tenant = await make_tenant(runtime, client, "acme")
    for _ in range(3):
        await make_api_key(runtime, tenant, Role.VIEWER)
    return tenant


@both_databases
async def test_sign_in_is_recorded(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    entry = await _only(client, tenant.admin, "auth.login")
    assert entry["tenant_id"] == tenant.id
    assert entry["actor_user_id"] == tenant.admin.user_id
    assert entry["ip"] == "10.9.8.7"
    assert entry["details"] == {"method": "password"}


@both_databases
async def test_api_key_creation_and_revocation_are_recorded(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    created = await client.post(
        "/api/v1/api-keys",
        headers=tenant.admin.headers,
        json={"name": "ci", "role": "developer"},
    )
    assert created.status_code == 201, created.text
    key = created.json()
    entry = await _only(client, tenant.admin, "api_key.created")
    assert entry["target_type"] == "api_key"
    assert entry["target_id"] == key["id"]
    assert entry["actor_user_id"] == tenant.admin.user_id
    assert entry["details"]["name"] == "ci"
    assert entry["details"]["role"] == "developer"
    assert key["key"] not in orjson.dumps(entry).decode()  # the secret is never logged

    revoked = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=tenant.admin.headers)
    assert revoked.status_code == 200, revoked.text
    entry = await _only(client, tenant.admin, "api_key.revoked")
    assert entry["target_id"] == key["id"]
    assert entry["actor_user_id"] == tenant.admin.user_id
    # Revoking twice changes nothing and records nothing more.
    await client.delete(f"/api/v1/api-keys/{key['id']}", headers=tenant.admin.headers)
    assert (await _entries(client, tenant.admin, action="api_key.revoked"))["total"] == 1


@both_databases
async def test_actions_by_an_api_key_name_the_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    admin_key = await make_api_key(runtime, tenant, Role.TENANT_ADMIN)
    added = await client.post(
        "/api/v1/members",
        headers=admin_key.headers,
        json={"email": "by-key@acme.example", "role": "viewer"},
    )
    assert added.status_code == 201, added.text
    log = await _entries(client, tenant.admin, action="member.added")
    by_key = [e for e in log["items"] if e["target_id"] == added.json()["user_id"]]
    assert len(by_key) == 1
    assert by_key[0]["actor_api_key_id"] == admin_key.extra["key_id"]
    assert by_key[0]["actor_user_id"] is None


@both_databases
async def test_api_keys_cannot_create_api_keys(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    developer_key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    refused = await client.post(
        "/api/v1/api-keys", headers=developer_key.headers, json={"name": "child", "role": "viewer"}
    )
    assert refused.status_code == 403
    assert "sign in as a user" in refused.json()["detail"]
    listed = await client.get("/api/v1/api-keys", headers=tenant.admin.headers)
    assert listed.json()["total"] == 1  # only the developer key itself


@both_databases
async def test_role_change_is_recorded(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    developer = await make_member(client, tenant, Role.DEVELOPER)
    changed = await client.patch(
        f"/api/v1/members/{developer.extra['membership_id']}",
        headers=tenant.admin.headers,
        json={"role": "viewer"},
    )
    assert changed.status_code == 200, changed.text
    entry = await _only(client, tenant.admin, "member.role_changed")
    assert entry["target_type"] == "user"
    assert entry["target_id"] == developer.user_id
    assert entry["actor_user_id"] == tenant.admin.user_id
    assert entry["details"]["from"] == "developer"
    assert entry["details"]["to"] == "viewer"


@both_databases
async def test_tenant_update_by_super_admin_is_recorded(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    root = await make_super_admin(runtime, client)
    updated = await client.patch(
        f"/api/v1/tenants/{tenant.id}", headers=root.headers, json={"plan": "premium"}
    )
    assert updated.status_code == 200, updated.text
    entry = await _only(client, tenant.admin, "tenant.updated")  # the tenant sees it too
    assert entry["tenant_id"] == tenant.id
    assert entry["target_id"] == tenant.id
    assert entry["actor_user_id"] == root.user_id
    assert entry["details"] == {"plan": ["enterprise", "premium"]}


@both_databases
async def test_each_tenant_reads_only_its_own_log(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    acme_key = await make_api_key(runtime, acme, Role.DEVELOPER)
    await make_member(client, acme, Role.VIEWER)

    acme_log = await _entries(client, acme.admin, limit=200)
    globex_log = await _entries(client, globex.admin, limit=200)
    assert {e["tenant_id"] for e in acme_log["items"]} == {acme.id}
    assert {e["tenant_id"] for e in globex_log["items"]} == {globex.id}
    assert acme_log["total"] > globex_log["total"]
    # Nothing of acme's shows up for globex, not even through a filter.
    globex_targets = {e["target_id"] for e in globex_log["items"]}
    assert acme.id not in globex_targets
    assert acme_key.extra["key_id"] not in globex_targets
    none = await _entries(client, globex.admin, action="api_key.created")
    assert none == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert not {e["seq"] for e in acme_log["items"]} & {e["seq"] for e in globex_log["items"]}


@both_databases
async def test_log_is_paginated_newest_first(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    for _ in range(5):
        await make_api_key(runtime, tenant, Role.VIEWER)
    pages = [
        await _entries(client, tenant.admin, action="api_key.created", limit=2, offset=offset)
        for offset in (0, 2, 4, 6)
    ]
    assert [page["total"] for page in pages] == [5, 5, 5, 5]
    assert [len(page["items"]) for page in pages] == [2, 2, 1, 0]
    assert [(page["limit"], page["offset"]) for page in pages] == [(2, 0), (2, 2), (2, 4), (2, 6)]
    seqs = [entry["seq"] for page in pages for entry in page["items"]]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == 5

    everything = await _entries(client, tenant.admin, limit=200)
    assert everything["total"] == len(everything["items"]) > 5
    assert {e["action"] for e in everything["items"]} >= {
        "tenant.created",
        "member.added",
        "auth.login",
        "api_key.created",
    }
    bad = await client.get("/api/v1/audit-log", params={"limit": 0}, headers=tenant.admin.headers)
    assert bad.status_code == 422


@both_databases
async def test_log_filters_by_action(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await make_api_key(runtime, tenant, Role.VIEWER)
    await make_member(client, tenant, Role.DEVELOPER)
    added = await _entries(client, tenant.admin, action="member.added")
    # The first admin (at tenant creation) and the developer.
    assert added["total"] == 2
    assert {e["action"] for e in added["items"]} == {"member.added"}
    assert {e["details"]["role"] for e in added["items"]} == {"tenant_admin", "developer"}
    assert (await _entries(client, tenant.admin, action="no.such_action"))["total"] == 0


@both_databases
@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER, Role.BILLING_ADMIN])
async def test_only_admins_read_the_log(
    client: httpx.AsyncClient, runtime: Runtime, role: Role
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    member = await make_member(client, tenant, role)
    key = await make_api_key(runtime, tenant, role)
    for caller in (member, key):
        response = await client.get("/api/v1/audit-log", headers=caller.headers)
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "Forbidden"
    assert (await client.get("/api/v1/audit-log")).status_code == 401


@both_databases
async def test_super_admin_outside_a_tenant_is_told_to_pick_one(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    root = await make_super_admin(runtime, client)
    response = await client.get("/api/v1/audit-log", headers=root.headers)
    assert response.status_code == 403
    assert "needs a tenant" in response.json()["detail"]


@both_databases
async def test_chain_verifies_on_an_untouched_log(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    empty = await _verify(runtime)
    assert empty == ChainReport(ok=True, entries=0)
    await _tenant_with_history(runtime, client)
    report = await _verify(runtime)
    assert report.ok
    assert report.broken_seq is None
    assert report.entries == len(await _seqs(runtime)) >= 5
    # Every entry links to the one before it, starting from the genesis hash.
    async with runtime.session_factory() as session:
        rows = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    assert rows[0].prev_hash == GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(rows))


@both_databases
async def test_edited_entry_is_detected(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await _tenant_with_history(runtime, client)
    seqs = await _seqs(runtime)
    middle = seqs[len(seqs) // 2]
    await _execute(
        runtime,
        "UPDATE audit_entries SET details = :details WHERE seq = :seq",
        details='{"name": "innocent"}',
        seq=middle,
    )
    report = await _verify(runtime)
    assert not report.ok
    assert report.broken_seq == middle
    assert report.entries == seqs.index(middle)  # the entries before it are still good
    assert report.reason is not None
    assert "modified" in report.reason


@both_databases
async def test_edited_action_is_detected(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await _tenant_with_history(runtime, client)
    seqs = await _seqs(runtime)
    await _execute(
        runtime, "UPDATE audit_entries SET action = 'auth.logout' WHERE seq = :seq", seq=seqs[1]
    )
    report = await _verify(runtime)
    assert (report.ok, report.broken_seq) == (False, seqs[1])


@both_databases
async def test_deleted_entry_is_detected(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await _tenant_with_history(runtime, client)
    seqs = await _seqs(runtime)
    middle = len(seqs) // 2
    await _execute(runtime, "DELETE FROM audit_entries WHERE seq = :seq", seq=seqs[middle])
    report = await _verify(runtime)
    assert not report.ok
    assert report.broken_seq == seqs[middle + 1]  # the entry that pointed at the deleted one
    assert report.reason is not None
    assert "removed" in report.reason


async def _forge(runtime: Runtime, seq: int, **changes: Any) -> None:
    """Rewrite an entry's link and details and give it a hash matching its new contents."""
    async with runtime.session_factory() as session:
        entry = await session.get_one(AuditEntry, seq)
        fields: dict[str, Any] = {
            "prev_hash": entry.prev_hash,
            "created_at": entry.created_at,
            "tenant_id": entry.tenant_id,
            "actor_user_id": entry.actor_user_id,
            "actor_api_key_id": entry.actor_api_key_id,
            "action": entry.action,
            "target_type": entry.target_type,
            "target_id": entry.target_id,
            "ip": entry.ip,
            "details": entry.details,
        }
    fields.update(changes)
    await _execute(
        runtime,
        "UPDATE audit_entries SET prev_hash = :prev_hash, details = :details, hash = :hash "
        "WHERE seq = :seq",
        prev_hash=fields["prev_hash"],
        details=orjson.dumps(fields["details"]).decode(),
        hash=entry_hash(**fields),
        seq=seq,
    )


@both_databases
async def test_forged_relink_after_a_deletion_breaks_the_next_entry(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _tenant_with_history(runtime, client)
    seqs = await _seqs(runtime)
    assert len(seqs) >= 5
    gone, relinked, following = seqs[1], seqs[2], seqs[3]
    async with runtime.session_factory() as session:
        before_gone = (await session.get_one(AuditEntry, seqs[0])).hash
    # Remove an entry, then point its successor at its predecessor and re-hash it: that
    # entry now checks out on its own, but the one after it still names the old hash.
    await _execute(runtime, "DELETE FROM audit_entries WHERE seq = :seq", seq=gone)
    await _forge(runtime, relinked, prev_hash=before_gone)
    report = await _verify(runtime)
    assert not report.ok
    assert report.broken_seq == following
    assert report.entries == 2  # the first entry and the forged one pass


@both_databases
async def test_rehashed_edit_breaks_the_next_entry(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _tenant_with_history(runtime, client)
    seqs = await _seqs(runtime)
    middle = len(seqs) // 2
    await _forge(runtime, seqs[middle])  # re-hashing unchanged contents changes nothing
    assert (await _verify(runtime)).ok
    # Edited and re-hashed, the entry is self-consistent; its successor no longer links to it.
    await _forge(runtime, seqs[middle], details={"name": "rewritten"})
    report = await _verify(runtime)
    assert not report.ok
    assert report.broken_seq == seqs[middle + 1]
    assert report.entries == middle + 1


@both_databases
async def test_entry_relinked_to_a_wrong_parent_is_detected(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _tenant_with_history(runtime, client)
    seqs = await _seqs(runtime)
    middle = len(seqs) // 2
    # Pointing an entry back at the genesis (starting a new chain) does not hide it either.
    await _forge(runtime, seqs[middle], prev_hash=GENESIS)
    report = await _verify(runtime)
    assert (report.ok, report.broken_seq) == (False, seqs[middle])


def _apiary(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [str(APIARY_BIN), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_verify_names_the_tampered_entry(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for command in (
        ["init"],
        ["admin", "create-tenant", "acme", "--admin-email", "a@acme.io"],
    ):
        result = _apiary(data_dir, *command)
        assert result.returncode == 0, result.stderr
    intact = _apiary(data_dir, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert orjson.loads(intact.stdout)["ok"] is True

    with sqlite3.connect(data_dir / "apiary.db") as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM audit_entries ORDER BY seq")]
        assert len(seqs) >= 3
        db.execute(
            "UPDATE audit_entries SET details = ? WHERE seq = ?",
            ('{"name": "not-acme"}', seqs[1]),
        )
    db.close()

    tampered = _apiary(data_dir, "audit", "verify")
    assert tampered.returncode == 1, tampered.stderr
    report = orjson.loads(tampered.stdout)
    assert report["ok"] is False
    assert report["broken_seq"] == seqs[1]
    assert "Traceback" not in tampered.stderr


def test_an_archive_verifies_on_its_own_and_names_what_was_changed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for command in (
        ["init"],
        ["admin", "create-tenant", "acme", "--admin-email", "a@acme.io"],
    ):
        assert _apiary(data_dir, *command).returncode == 0
    archive = tmp_path / "audit.jsonl"
    written = _apiary(data_dir, "audit", "archive", "--output", str(archive))
    assert written.returncode == 0, written.stderr
    lines = archive.read_bytes().splitlines()
    assert orjson.loads(written.stdout)["entries"] == len(lines) >= 3
    assert orjson.loads(lines[0])["prev_hash"] == GENESIS

    # The database is not needed: the archive's own hashes are the proof.
    (data_dir / "apiary.db").unlink()
    intact = _apiary(tmp_path / "elsewhere", "audit", "verify", "--archive", str(archive))
    assert intact.returncode == 0, intact.stderr
    report = orjson.loads(intact.stdout)
    assert (report["ok"], report["entries"]) == (True, len(lines))
    assert report["first_prev_hash"] == GENESIS
    assert report["last_hash"] == orjson.loads(lines[-1])["hash"]

    edited = orjson.loads(lines[1])
    edited["details"] = {"name": "not-acme"}
    cases = {
        "modified": [lines[0], orjson.dumps(edited), *lines[2:]],
        "inserted or removed": [lines[0], *lines[2:]],
    }
    for reason, tampered_lines in cases.items():
        archive.write_bytes(b"\n".join(tampered_lines))
        tampered = _apiary(tmp_path, "audit", "verify", "--archive", str(archive))
        assert tampered.returncode == 1, reason
        report = orjson.loads(tampered.stdout)
        assert report["broken_seq"] == orjson.loads(lines[1 if reason == "modified" else 2])["seq"]
        assert reason in report["reason"]

    archive.write_text("not json\n")
    garbage = _apiary(tmp_path, "audit", "verify", "--archive", str(archive))
    assert garbage.returncode == 1
    assert "line 1 is not an archived entry" in orjson.loads(garbage.stdout)["reason"]
    missing = _apiary(tmp_path, "audit", "verify", "--archive", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


def test_an_archive_can_stop_at_a_time(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert _apiary(data_dir, "init").returncode == 0
    archive = tmp_path / "old.jsonl"
    result = _apiary(
        data_dir, "audit", "archive", "-o", str(archive), "--before", "2020-01-01T00:00:00"
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["entries"] == 0
    assert archive.read_bytes() == b""


@both_databases
async def test_entries_cut_from_the_end_are_detected(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    async with runtime.session_factory() as session:
        assert (await audit_service.verify(session)).ok
        last = await session.scalar(select(func.max(AuditEntry.seq)))
    await _execute(runtime, "DELETE FROM audit_entries WHERE seq = :seq", seq=last)
    async with runtime.session_factory() as session:
        report = await audit_service.verify(session)
    assert not report.ok
    assert report.reason is not None
    assert "removed from the end" in report.reason


@both_databases
async def test_concurrent_appends_keep_one_chain(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    responses = await asyncio.gather(
        *[
            client.post(
                "/api/v1/api-keys",
                headers=tenant.admin.headers,
                json={"name": f"k{i}", "role": "viewer"},
            )
            for i in range(12)
        ]
    )
    assert {r.status_code for r in responses} == {201}
    async with runtime.session_factory() as session:
        report = await audit_service.verify(session)
    assert report.ok, report
    assert report.entries >= 13


_APPENDER = """
import asyncio, sys
from apiary.audit.service import audit_service
from apiary.auth.context import Actor
from apiary.config import Settings
from apiary.db import session_scope
from apiary.runtime import Runtime

async def main() -> None:
    runtime = Runtime.build(Settings(data_dir=sys.argv[1]))
    for i in range(int(sys.argv[2])):
        async with session_scope(runtime.session_factory) as session:
            await audit_service.record(
                session, action="test.append", actor=Actor(ip=sys.argv[3]), tenant_id=None,
                details={"i": i},
            )
    await runtime.close()

asyncio.run(main())
"""


def test_two_processes_appending_to_one_sqlite_log_keep_one_chain(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(tmp_path)
    apiary = Path(sys.executable).parent / "apiary"
    subprocess.run([apiary, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(tmp_path), "40", f"writer-{n}"], env=env
        )
        for n in range(2)
    ]
    assert [w.wait(timeout=180) for w in writers] == [0, 0]
    verified = subprocess.run(
        [apiary, "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    report = orjson.loads(verified.stdout)
    assert verified.returncode == 0, report
    assert report["entries"] == 80


async def test_agent_changes_are_audited_with_who_what_and_from_where(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    headers = tenant.admin.headers
    created = await client.post("/api/v1/agents", headers=headers, json={"name": "researcher"})
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    patched = await client.patch(
        f"/api/v1/agents/{agent_id}", headers=headers, json={"system_prompt": "Be brief."}
    )
    assert patched.status_code == 200, patched.text
    assert (await client.delete(f"/api/v1/agents/{agent_id}", headers=headers)).status_code == 204
    entries = {
        action: await _only(client, tenant.admin, action)
        for action in ("agent.created", "agent.updated", "agent.deleted")
    }
    for entry in entries.values():
        assert entry["target_type"] == "agent"
        assert entry["target_id"] == agent_id
        assert entry["actor_user_id"] == tenant.admin.user_id
        assert entry["ip"] is not None
    assert entries["agent.created"]["details"] == {"name": "researcher", "version": 1}
    # Which fields changed, never their values (a prompt is the tenant's data).
    assert entries["agent.updated"]["details"] == {"version": 2, "fields": ["system_prompt"]}
    assert (await _verify(runtime)).ok


@pytest.mark.skipif(TEST_DATABASE == "sqlite", reason="the trigger is PostgreSQL's")
async def test_the_database_refuses_to_change_or_remove_an_entry(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The trigger holds for any role that is not the table's owner disabling it, the
    application's included."""
    await make_tenant(runtime, client, "acme")
    for statement in (
        "UPDATE audit_entries SET details = '{}'",
        "DELETE FROM audit_entries",
    ):
        with pytest.raises(DBAPIError, match="audit_entries is append-only"):
            async with runtime.engine.begin() as connection:
                await connection.execute(text(statement))
    async with runtime.session_factory() as session:
        assert (await audit_service.verify(session)).ok  # nothing changed


@both_databases
async def test_an_anchor_catches_a_rewrite_that_rehashed_the_whole_chain(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _tenant_with_history(runtime, client)
    async with runtime.session_factory() as session:
        anchored = await audit_service.anchor(session)
        rows = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    assert anchored["entries"] == len(rows)
    # The owner rewrites an early entry and re-hashes everything after it, head included:
    # the chain alone cannot tell.
    previous = rows[0].hash
    for index, entry in enumerate(rows[1:], start=1):
        details = {"name": "innocent"} if index == 1 else entry.details
        new_hash = entry_hash(
            prev_hash=previous,
            created_at=entry.created_at,
            tenant_id=entry.tenant_id,
            actor_user_id=entry.actor_user_id,
            actor_api_key_id=entry.actor_api_key_id,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            ip=entry.ip,
            details=details,
        )
        await _execute(
            runtime,
            "UPDATE audit_entries SET details = :details, prev_hash = :prev, hash = :hash "
            "WHERE seq = :seq",
            details=orjson.dumps(details).decode(),
            prev=previous,
            hash=new_hash,
            seq=entry.seq,
        )
        previous = new_hash
    await _execute(runtime, "UPDATE audit_chain_head SET head_hash = :hash", hash=previous)
    assert (await _verify(runtime)).ok  # consistent, as a full rewrite is
    async with runtime.session_factory() as session:
        report = await audit_service.check_anchors(session, [anchored])
    assert not report.ok
    assert report.broken_seq == rows[-1].seq
    assert report.reason is not None
    assert "rewritten" in report.reason


def test_cli_anchors_are_appended_and_checked(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    anchors = tmp_path / "anchors.jsonl"
    assert _apiary(data_dir, "init").returncode == 0
    first = _apiary(data_dir, "audit", "anchor", "-o", str(anchors))
    assert first.returncode == 0, first.stderr
    tenant = _apiary(data_dir, "admin", "create-tenant", "acme", "--admin-email", "a@acme.io")
    assert tenant.returncode == 0, tenant.stderr
    assert _apiary(data_dir, "audit", "anchor", "-o", str(anchors)).returncode == 0
    lines = [orjson.loads(line) for line in anchors.read_bytes().splitlines()]
    assert len(lines) == 2
    assert lines[1]["entries"] > lines[0]["entries"] == orjson.loads(first.stdout)["entries"]
    checked = _apiary(data_dir, "audit", "verify", "--anchors", str(anchors))
    assert checked.returncode == 0, checked.stderr
    assert orjson.loads(checked.stdout) == {
        "ok": True,
        "entries": 2,
        "broken_seq": None,
        "reason": None,
        "first_prev_hash": None,
        "last_hash": None,
        "archived": 0,
        "anchors_in_archives": 0,
    }
    unreadable = _apiary(data_dir, "audit", "verify", "--anchors", str(tmp_path / "none"))
    assert unreadable.returncode == 2
    assert "cannot read" in unreadable.stderr


async def _backdated_history(
    runtime: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, days: int
) -> int:
    """A tenant's first entries, written as if `days` ago (the chain hashes their times, so
    they are written that way rather than edited); returns how many there are."""
    past = datetime.now(UTC) - timedelta(days=days)
    tick = itertools.count()
    with monkeypatch.context() as patched:
        patched.setattr("apiary.audit.service.utcnow", lambda: past + timedelta(seconds=next(tick)))
        await _tenant_with_history(runtime, client)
    return len(await _seqs(runtime))


async def _prune(runtime: Runtime, archive: Path, before: datetime) -> PruneReport:
    async with session_scope(runtime.session_factory) as session:
        with archive.open("wb") as out:
            return await audit_service.prune(session, out, before=before)


@both_databases
async def test_entries_past_retention_are_archived_and_pruned_and_the_rest_still_verifies(
    client: httpx.AsyncClient,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    old = await _backdated_history(runtime, client, monkeypatch, days=3000)
    async with runtime.session_factory() as session:
        at_old_end = await audit_service.anchor(session)
    await make_api_key(runtime, await make_tenant(runtime, client, "globex"), Role.VIEWER)
    kept = len(await _seqs(runtime)) - old
    cutoff = datetime.now(UTC) - timedelta(days=PRUNE_FLOOR_DAYS)

    report = await _prune(runtime, tmp_path / "2018.jsonl", cutoff)
    assert (report.ok, report.archived) == (True, old)
    assert len(await _seqs(runtime)) == kept  # only the young entries are left
    verified = await _verify(runtime)
    assert (verified.ok, verified.entries, verified.archived) == (True, kept, old)

    # The archive proves itself, and the table's chain starts where it ends.
    with (tmp_path / "2018.jsonl").open("rb") as lines:
        archived = verify_archive(lines)
    assert (archived.ok, archived.entries) == (True, old)
    assert archived.first_prev_hash == GENESIS
    assert archived.last_hash == report.last_hash
    async with runtime.session_factory() as session:
        first_left = await session.scalar(select(AuditEntry).order_by(AuditEntry.seq).limit(1))
        assert first_left is not None
        assert first_left.prev_hash == archived.last_hash
        # Anchors still check: one at the pruned end, one in the table.
        at_now = await audit_service.anchor(session)
        anchors = await audit_service.check_anchors(session, [at_old_end, at_now])
    assert anchors.ok, anchors

    # Appending goes on; pruning again finds nothing old; the whole still verifies.
    await make_api_key(runtime, await make_tenant(runtime, client, "initech"), Role.VIEWER)
    again = await _prune(runtime, tmp_path / "again.jsonl", cutoff)
    assert (again.ok, again.archived) == (True, 0)
    assert (await _verify(runtime)).ok


@both_databases
async def test_a_tampered_old_entry_stops_the_prune_and_nothing_is_removed(
    client: httpx.AsyncClient,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    old = await _backdated_history(runtime, client, monkeypatch, days=3000)
    seqs = await _seqs(runtime)
    await _execute(runtime, "UPDATE audit_entries SET details = '{}' WHERE seq = :seq", seq=seqs[1])
    cutoff = datetime.now(UTC) - timedelta(days=PRUNE_FLOOR_DAYS)
    report = await _prune(runtime, tmp_path / "a.jsonl", cutoff)
    assert not report.ok
    assert report.broken_seq == seqs[1]
    assert report.reason is not None
    assert "modified" in report.reason
    assert len(await _seqs(runtime)) == old  # nothing archived away


async def test_postgresql_refuses_to_prune_entries_younger_than_the_floor(
    client: httpx.AsyncClient, runtime: Runtime, tmp_path: Path
) -> None:
    """Not both_databases: the trigger is PostgreSQL's. Even a prune that skips the CLI's
    checks cannot remove recent entries with the application's credentials."""
    await _tenant_with_history(runtime, client)
    present = await _seqs(runtime)
    with pytest.raises(DBAPIError, match="audit_entries is append-only"):
        await _prune(runtime, tmp_path / "a.jsonl", datetime.now(UTC) + timedelta(seconds=1))
    assert await _seqs(runtime) == present


def test_cli_prune_keeps_the_retention_and_never_overwrites_an_archive(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert _apiary(data_dir, "init").returncode == 0
    archive = tmp_path / "audit-old.jsonl"

    nothing_old = _apiary(data_dir, "audit", "prune", "-o", str(archive))
    assert nothing_old.returncode == 0, nothing_old.stderr
    assert orjson.loads(nothing_old.stdout)["archived"] == 0
    assert not archive.exists()  # no empty archive left behind

    too_young = _apiary(
        data_dir, "audit", "prune", "-o", str(archive), "--before", "2030-01-01T00:00:00"
    )
    assert too_young.returncode == 2
    assert "younger than the retention (2557 days" in too_young.stderr

    archive.write_text("an earlier archive\n")
    exists = _apiary(data_dir, "audit", "prune", "-o", str(archive), "--before", "2001-01-01")
    assert exists.returncode == 2
    assert "exists" in exists.stderr
    assert archive.read_text() == "an earlier archive\n"
    assert _apiary(data_dir, "audit", "verify").returncode == 0

    # Given a folder (a scheduled job's volume), it names the archive after the cutoff.
    folder = tmp_path / "archives"
    folder.mkdir()
    named = _apiary(data_dir, "audit", "prune", "-o", str(folder), "--before", "2001-01-01")
    assert named.returncode == 0, named.stderr
    assert orjson.loads(named.stdout)["output"] == str(
        folder / "audit-before-20010101T000000Z.jsonl"
    )
