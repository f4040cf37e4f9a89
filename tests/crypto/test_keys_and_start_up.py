"""KEK configuration, the start-up refusal, and `apiary encryption` from a shell while the
service runs: rotation re-wraps every tenant's data key, after which the old KEK can go."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from apiary.config import ConfigError, EncryptionSettings, Settings, load_settings
from apiary.crypto.errors import EncryptionKeyUnavailable
from apiary.crypto.keyring import Keyring
from apiary.knowledge.models import DOCUMENT_CONTENT
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.crypto.conftest import fresh_keyring, kek_value, local, new_key
from tests.factories import make_tenant

pytestmark = pytest.mark.both_databases

APIARY_BIN = Path(sys.executable).parent / "apiary"


def _config_error(**env: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(ConfigError) as caught:
            load_settings()
    return str(caught.value)


def test_keks_come_from_the_environment_with_their_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = new_key(), new_key()
    monkeypatch.setenv("APIARY_ENCRYPTION__KEK", kek_value("2026-12", two))
    monkeypatch.setenv("APIARY_ENCRYPTION__PREVIOUS_KEKS", kek_value("2026-06", one))
    encryption = load_settings().encryption
    assert encryption.enabled
    assert encryption.local_keys() == {"2026-12": two, "2026-06": one}  # the first wraps
    assert not load_settings(encryption=EncryptionSettings()).encryption.enabled


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APIARY_ENCRYPTION__KEK": "no-kid-here"}, "kid:base64-of-32-bytes"),
        ({"APIARY_ENCRYPTION__KEK": "k1:not*base64"}, "KEK 'k1': the key is not valid base64"),
        (
            {"APIARY_ENCRYPTION__KEK": "k1:" + base64.b64encode(b"short").decode()},
            "must be 32 bytes (AES-256), not 5",
        ),
        (
            {"APIARY_ENCRYPTION__PREVIOUS_KEKS": kek_value("k0", os.urandom(32))},
            "previous_keks only unwrap",
        ),
        (
            {
                "APIARY_ENCRYPTION__KEK": kek_value("k1", os.urandom(32)),
                "APIARY_ENCRYPTION__PREVIOUS_KEKS": kek_value("k1", os.urandom(32)),
            },
            "two KEKs have the same kid",
        ),
        (
            {"APIARY_ENCRYPTION__KEY_VAULT_KEY_ID": "https://example.vault.azure.net/secrets/x"},
            "APIARY_ENCRYPTION__KEY_VAULT_KEY_ID",
        ),
    ],
)
def test_a_bad_kek_is_refused_naming_the_setting(env: dict[str, str], message: str) -> None:
    error = _config_error(**env)
    assert message in error
    assert "APIARY_ENCRYPTION" in error
    for value in env.values():  # a secret is never echoed back
        if ":" in value and not value.startswith("https"):
            assert value.split(":", 1)[1] not in error


async def test_start_up_refuses_when_tenant_data_keys_need_a_kek_it_lacks(
    client: httpx.AsyncClient,
    runtime: Runtime,
    encrypted: Keyring,
    kek_one: bytes,
    settings: Settings,
    tmp_path: Path,
) -> None:
    tenant = await make_tenant(runtime, client)
    await encrypted.encrypt(uuid.UUID(tenant.id), b"x", purpose=DOCUMENT_CONTENT)  # under k1

    def app_with(encryption: EncryptionSettings) -> Any:
        return create_app(
            settings.model_copy(update={"encryption": encryption, "data_dir": tmp_path})
        )

    # A new KEK only (the old one dropped before the rotation ran), and none at all.
    for encryption, says in (
        (EncryptionSettings(kek=SecretStr(kek_value("k2", new_key()))), "configure them"),
        (EncryptionSettings(), "configure them"),
    ):
        application = app_with(encryption)
        with pytest.raises(EncryptionKeyUnavailable) as refused:
            async with application.router.lifespan_context(application):
                pytest.fail("started without the KEK its tenants' data keys need")
        assert "'k1' (1 data keys)" in refused.value.detail
        assert says in refused.value.detail
    # A worker process's loop refuses the same way, before it takes any task.
    from apiary.worker.process import ExecutionLoop

    worker_settings = settings.model_copy(
        update={
            "encryption": EncryptionSettings(kek=SecretStr(kek_value("k2", new_key()))),
            "data_dir": tmp_path,
        }
    )
    with pytest.raises(EncryptionKeyUnavailable, match="'k1' \\(1 data keys\\)"):
        await asyncio.to_thread(ExecutionLoop, worker_settings)
    # With k1 still accepted, the check passes.
    await fresh_keyring(runtime, local(k2=new_key(), k1=kek_one)).check_at_start()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _apiary(
    database_url: str, data_dir: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    environment.update(APIARY_DATABASE_URL=database_url, APIARY_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [str(APIARY_BIN), "encryption", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_apiary_encryption_rotate_rewraps_while_the_service_runs(
    client: httpx.AsyncClient,
    runtime: Runtime,
    encrypted: Keyring,
    kek_one: bytes,
    database_url: str,
    tmp_path: Path,
) -> None:
    from tests.knowledge.helpers import BASES, create_base, ingested, upload

    tenants = [await make_tenant(runtime, client) for _ in range(3)]
    documents = []
    for tenant in tenants:
        kb = await create_base(client, tenant.admin)
        documents.append(
            (tenant, kb, await upload(client, tenant.admin, kb["id"], "a.md", b"# A\n\nalpha\n"))
        )
    await ingested(runtime)
    kek_two = new_key()
    old, new = kek_value("k1", kek_one), kek_value("k2", kek_two)

    # Rotating before the old KEK is listed as previous: refused, nothing changed.
    refused = await asyncio.to_thread(
        _apiary, database_url, tmp_path, "rotate", APIARY_ENCRYPTION__KEK=new
    )
    assert refused.returncode == 1
    assert "'k1' (3 data keys)" in refused.stderr
    assert "Traceback" not in refused.stderr

    rotated = await asyncio.to_thread(
        _apiary,
        database_url,
        tmp_path,
        "rotate",
        APIARY_ENCRYPTION__KEK=new,
        APIARY_ENCRYPTION__PREVIOUS_KEKS=old,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert orjson.loads(rotated.stdout) == {
        "rewrapped": 3,
        "unchanged": 0,
        "data_keys_by_kek": {"k2": 3},
    }
    assert kek_two.hex() not in rotated.stdout + rotated.stderr

    # The old KEK is gone from the configuration: nothing is missing.
    status = await asyncio.to_thread(
        _apiary, database_url, tmp_path, "status", APIARY_ENCRYPTION__KEK=new
    )
    assert status.returncode == 0, status.stderr
    assert orjson.loads(status.stdout) == {
        "enabled": True,
        "data_keys_by_kek": {"k2": 3},
        "missing_keks": [],
    }
    # The running service, still configured with k1 only, carries on with what it holds.
    for tenant, kb, document in documents:
        response = await client.post(
            f"{BASES}/{kb['id']}/documents/{document['id']}/reindex", headers=tenant.admin.headers
        )
        assert response.status_code == 202
    await ingested(runtime)
    for tenant, kb, document in documents:
        response = await client.get(
            f"{BASES}/{kb['id']}/documents/{document['id']}", headers=tenant.admin.headers
        )
        assert response.json()["status"] == "ready", response.json()["error"]

    # A data key rotation from the shell: every tenant gets version 2.
    data = await asyncio.to_thread(
        _apiary, database_url, tmp_path, "rotate", "--data-keys", APIARY_ENCRYPTION__KEK=new
    )
    assert data.returncode == 0, data.stderr
    assert orjson.loads(data.stdout)["new_data_key_versions"] == 3
    reencrypted = await asyncio.to_thread(
        _apiary, database_url, tmp_path, "reencrypt", APIARY_ENCRYPTION__KEK=new
    )
    assert reencrypted.returncode == 0, reencrypted.stderr
    assert orjson.loads(reencrypted.stdout)["documents"] == 3


def test_apiary_encryption_new_kek_prints_a_usable_key(tmp_path: Path) -> None:
    printed = _apiary(
        "sqlite+aiosqlite:///" + str(tmp_path / "x.db"), tmp_path, "new-kek", "2027-01"
    )
    assert printed.returncode == 0, printed.stderr
    value = printed.stdout.strip()
    kid, key = value.split(":", 1)
    assert kid == "2027-01"
    assert len(base64.b64decode(key)) == 32
    assert EncryptionSettings(kek=SecretStr(value)).local_keys() == {kid: base64.b64decode(key)}


async def test_apiary_serve_refuses_to_start_without_the_kek_naming_it(
    client: httpx.AsyncClient,
    runtime: Runtime,
    encrypted: Keyring,
    database_url: str,
    tmp_path: Path,
) -> None:
    tenant = await make_tenant(runtime, client)
    await encrypted.encrypt(uuid.UUID(tenant.id), b"x", purpose=DOCUMENT_CONTENT)  # under k1
    environment = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    environment.update(
        APIARY_DATABASE_URL=database_url,
        APIARY_DATA_DIR=str(tmp_path),
        APIARY_PORT=str(_free_port()),
        APIARY_ENCRYPTION__KEK=kek_value("k2", new_key()),
    )
    served = await asyncio.to_thread(
        subprocess.run,
        [str(APIARY_BIN), "serve"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,  # a server that started would still be running: the test fails here
        check=False,
    )
    assert served.returncode != 0
    output = served.stdout + served.stderr
    assert "refusing to start" in output
    assert "'k1' (1 data keys)" in output
    assert "Application startup failed" in output
