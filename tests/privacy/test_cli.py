"""`apiary privacy ...`, run as a subprocess against a fresh embedded (SQLite) data dir."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import orjson

APIARY_BIN = Path(sys.executable).parent / "apiary"


def _apiary(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [str(APIARY_BIN), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _json(data_dir: Path, *args: str) -> Any:
    result = _apiary(data_dir, *args)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def test_export_erase_and_delete_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _apiary(data, "init").returncode == 0
    acme = _json(data, "admin", "create-tenant", "acme", "--admin-email", "a@acme.io")
    _json(data, "admin", "create-tenant", "globex", "--admin-email", "g@globex.io")

    exported = _json(data, "privacy", "export", "--tenant", "acme", "-o", str(tmp_path / "a.zip"))
    assert exported["bytes"] > 0
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert orjson.loads(archive.read("manifest.json"))["tenant_id"] == acme["tenant_id"]
        members = archive.read("members.jsonl")
        assert b"a@acme.io" in members
        assert b"g@globex.io" not in members
    person = _json(data, "privacy", "export", "--user", "a@acme.io", "-o", str(tmp_path / "u.zip"))
    assert person["archive"] == f"apiary-user-{acme['admin_user_id']}.zip"
    both = _apiary(data, "privacy", "export", "-o", str(tmp_path / "x.zip"))
    assert both.returncode == 2
    assert "exactly one of --tenant or --user" in both.stderr

    # The tenant's only member cannot be erased on their own: the tenant goes instead.
    alone = _apiary(data, "privacy", "erase-user", "a@acme.io")
    assert alone.returncode == 1
    assert "Conflict: user" in alone.stderr
    assert "only member of tenant 'acme'" in alone.stderr
    unconfirmed = _apiary(data, "privacy", "delete-tenant", "acme")
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr

    report = _json(data, "privacy", "delete-tenant", "acme", "--yes")
    assert report["tables"]["tenants"] == 1
    assert report["tables"]["memberships"] == 1
    assert report["users_erased"] == 1
    verified = _json(data, "audit", "verify")
    assert verified["ok"] is True

    gone = _apiary(data, "privacy", "delete-tenant", "acme", "--yes")
    assert gone.returncode == 1
    assert "NotFound: tenant 'acme' not found" in gone.stderr
    erased_again = _json(data, "privacy", "erase-user", acme["admin_user_id"])
    assert erased_again["already_erased"] is True
    nobody = _apiary(data, "privacy", "erase-user", "nobody@acme.io")
    assert nobody.returncode == 1
    assert "NotFound: user 'nobody@acme.io' not found" in nobody.stderr
