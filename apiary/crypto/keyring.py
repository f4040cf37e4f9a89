"""The keyring: each tenant's data keys, unwrapped on first use and kept in process.

`Keyring.encrypt(tenant_id, plaintext, purpose=...)` seals with the tenant's newest data
key (created, wrapped and committed on the tenant's first write); `decrypt` opens with the
version the ciphertext names, and returns data written before encryption as it is. The
domains see it as a `Sealer`. Data keys are created in their own short transaction, so a
key exists in the database before anything it encrypted can be committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.exc import IntegrityError

from apiary.crypto import envelope
from apiary.crypto.errors import CiphertextInvalid, EncryptionKeyUnavailable
from apiary.crypto.keks import CONFIGURE, Keks, keks_from_settings
from apiary.crypto.models import TenantDataKey
from apiary.crypto.repository import data_key_repository
from apiary.db import session_scope

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from apiary.config import EncryptionSettings

log = logging.getLogger("apiary.crypto")


class Sealer(Protocol):
    """What a domain needs to keep a tenant's data encrypted at rest. `purpose` names what
    the data is (e.g. "knowledge_document.content"): a ciphertext opens only as that."""

    async def encrypt(self, tenant_id: uuid.UUID, plaintext: bytes, *, purpose: str) -> bytes: ...

    async def decrypt(self, tenant_id: uuid.UUID, stored: bytes, *, purpose: str) -> bytes: ...

    async def encrypt_text(self, tenant_id: uuid.UUID, text: str, *, purpose: str) -> str: ...

    async def decrypt_text(self, tenant_id: uuid.UUID, stored: str, *, purpose: str) -> str: ...

    async def reseal(
        self, tenant_id: uuid.UUID, stored: bytes, *, purpose: str
    ) -> bytes | None: ...

    async def reseal_text(
        self, tenant_id: uuid.UUID, stored: str, *, purpose: str
    ) -> str | None: ...


@dataclass(frozen=True, slots=True)
class RewrapReport:
    rewrapped: int  # data keys now wrapped by the KEK that wraps new ones
    unchanged: int  # already were
    kek_ids: dict[str, int]  # every KEK id in the table afterwards, with its count


@dataclass
class Keyring:
    session_factory: async_sessionmaker[AsyncSession]
    keks: Keks | None  # None: encryption at rest is not configured
    current_key_ttl_s: float = 300.0
    _keys: dict[tuple[uuid.UUID, int], AESGCM] = field(default_factory=dict)
    _current: dict[uuid.UUID, tuple[int, float]] = field(default_factory=dict)
    _locks: dict[uuid.UUID, asyncio.Lock] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.keks is not None

    # -- sealing ---------------------------------------------------------------------------

    async def encrypt(self, tenant_id: uuid.UUID, plaintext: bytes, *, purpose: str) -> bytes:
        if self.keks is None:
            return plaintext
        version, key = await self._current_key(tenant_id)
        aad = envelope.associated_data(tenant_id, purpose)
        return envelope.seal(key, version, plaintext, aad)

    async def decrypt(self, tenant_id: uuid.UUID, stored: bytes, *, purpose: str) -> bytes:
        if not envelope.is_sealed(stored):
            return stored  # written before encryption was turned on
        version = envelope.header(stored).key_version
        key = await self._key(tenant_id, version)
        try:
            return envelope.open_sealed(key, stored, envelope.associated_data(tenant_id, purpose))
        except envelope.TagMismatch:
            raise CiphertextInvalid(
                f"stored {purpose} of tenant {tenant_id} does not decrypt under its data key "
                f"(version {version}): it was altered or does not belong here"
            ) from None

    async def encrypt_text(self, tenant_id: uuid.UUID, text: str, *, purpose: str) -> str:
        if self.keks is None:
            return text
        return envelope.to_text(await self.encrypt(tenant_id, text.encode(), purpose=purpose))

    async def decrypt_text(self, tenant_id: uuid.UUID, stored: str, *, purpose: str) -> str:
        if not envelope.is_sealed_text(stored):
            return stored
        try:
            blob = envelope.from_text(stored)
        except ValueError:  # binascii.Error
            blob = b""
        if not envelope.is_sealed(blob):  # the prefix, then no ciphertext
            raise CiphertextInvalid(
                f"stored {purpose} of tenant {tenant_id} has the ciphertext prefix but is not "
                "ciphertext"
            )
        return (await self.decrypt(tenant_id, blob, purpose=purpose)).decode()

    async def reseal(self, tenant_id: uuid.UUID, stored: bytes, *, purpose: str) -> bytes | None:
        """`stored` encrypted with the tenant's newest data key, or None when it already
        is: what `apiary encryption reencrypt` writes back (plaintext from before
        encryption, or data under a data key version a rotation replaced)."""
        if self.keks is None:
            return None
        version, _ = await self._current_key(tenant_id)
        if envelope.is_sealed(stored) and envelope.header(stored).key_version == version:
            return None
        plaintext = await self.decrypt(tenant_id, stored, purpose=purpose)
        return await self.encrypt(tenant_id, plaintext, purpose=purpose)

    async def reseal_text(self, tenant_id: uuid.UUID, stored: str, *, purpose: str) -> str | None:
        blob = envelope.from_text(stored) if envelope.is_sealed_text(stored) else stored.encode()
        resealed = await self.reseal(tenant_id, blob, purpose=purpose)
        if resealed is None:
            return None
        return envelope.to_text(resealed)

    # -- data keys -------------------------------------------------------------------------

    def _lock(self, tenant_id: uuid.UUID) -> asyncio.Lock:
        lock = self._locks.get(tenant_id)
        if lock is None:
            lock = self._locks[tenant_id] = asyncio.Lock()
        return lock

    async def _current_key(self, tenant_id: uuid.UUID) -> tuple[int, AESGCM]:
        cached = self._current.get(tenant_id)
        if cached is not None and time.monotonic() - cached[1] < self.current_key_ttl_s:
            return cached[0], self._keys[(tenant_id, cached[0])]
        async with self._lock(tenant_id):  # one creation per tenant per process
            async with self.session_factory() as session:
                row = await data_key_repository.newest(session, tenant_id)
            if row is None:
                row = await self._create(tenant_id, version=1)
            key = await self._unwrapped(row)
            self._current[tenant_id] = (row.version, time.monotonic())
            return row.version, key

    async def _create(self, tenant_id: uuid.UUID, *, version: int) -> TenantDataKey:
        """A new data key version, committed; another process creating the same version at
        the same moment wins, and its key is the one used."""
        assert self.keks is not None
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = await self.keks.wrap(data_key)
        row = TenantDataKey(
            tenant_id=tenant_id, version=version, kek_id=wrapped.kek_id, wrapped_key=wrapped.wrapped
        )
        try:
            async with session_scope(self.session_factory) as session:
                data_key_repository.add(session, row)
        except IntegrityError:
            async with self.session_factory() as session:
                existing = await data_key_repository.version(session, tenant_id, version)
            if existing is None:
                raise
            return existing
        self._keys[(tenant_id, version)] = AESGCM(data_key)
        return row

    async def _key(self, tenant_id: uuid.UUID, version: int) -> AESGCM:
        key = self._keys.get((tenant_id, version))
        if key is not None:
            return key
        async with self.session_factory() as session:
            row = await data_key_repository.version(session, tenant_id, version)
        if row is None:
            raise EncryptionKeyUnavailable(
                f"data key version {version} of tenant {tenant_id} is not in the database: "
                "data encrypted with it cannot be read"
            )
        return await self._unwrapped(row)

    async def _unwrapped(self, row: TenantDataKey) -> AESGCM:
        cached = self._keys.get((row.tenant_id, row.version))
        if cached is not None:
            return cached
        if self.keks is None:
            raise EncryptionKeyUnavailable(
                f"data of tenant {row.tenant_id} is encrypted (data key version {row.version}, "
                f"wrapped by key-encryption key {row.kek_id!r}) but encryption is not "
                f"configured: set {CONFIGURE}"
            )
        key = AESGCM(await self.keks.unwrap(row.kek_id, row.wrapped_key))
        self._keys[(row.tenant_id, row.version)] = key
        return key

    # -- operations (apiary encryption ...) ------------------------------------------------

    async def missing_keks(self) -> dict[str, int]:
        """KEK ids that wrap data keys in the database but that this process does not
        hold, with how many data keys each wraps."""
        async with self.session_factory() as session:
            counts = await data_key_repository.kek_counts(session)
        return {
            kek_id: count
            for kek_id, count in counts.items()
            if self.keks is None or not self.keks.holds(kek_id)
        }

    async def check(self) -> None:
        """Refuse (EncryptionKeyUnavailable naming them) when data keys in the database are
        wrapped by KEKs this process does not hold: it could not read that tenant data."""
        missing = await self.missing_keks()
        if missing:
            listed = ", ".join(
                f"{kek_id!r} ({count} data keys)" for kek_id, count in missing.items()
            )
            raise EncryptionKeyUnavailable(
                f"the database holds data keys wrapped by key-encryption keys that are not "
                f"configured: {listed}; configure them ({CONFIGURE}, "
                "APIARY_ENCRYPTION__PREVIOUS_KEKS)"
            )

    async def check_at_start(self, *, timeout_s: float = 10.0) -> None:
        """`check`, for a process starting: refuses to start (the error) when tenant data
        could not be read; a database that is away or not migrated yet is not a refusal
        (the process starts and /readyz reports it), only logged."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.check()
        except EncryptionKeyUnavailable as error:
            log.error("refusing to start: %s", error.detail)
            raise
        except Exception as error:
            log.warning(
                "encryption keys not checked at start-up (%s: %s)",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )

    async def rewrap(self, *, batch: int = 200) -> RewrapReport:
        """Re-wrap every data key under the KEK that wraps new ones. The data keys stay the
        same, so no data is re-encrypted and running processes (which hold them unwrapped)
        carry on; afterwards the previous KEKs can be removed from the configuration."""
        if self.keks is None:
            raise EncryptionKeyUnavailable(f"encryption at rest is not configured: set {CONFIGURE}")
        await self.check()  # every row must unwrap before any is changed
        rewrapped = unchanged = 0
        after: uuid.UUID | None = None
        while True:
            async with session_scope(self.session_factory) as session:
                rows = await data_key_repository.page(session, after=after, limit=batch)
                for row in rows:
                    data_key = await self.keks.unwrap(row.kek_id, row.wrapped_key)
                    wrapped = await self.keks.wrap(data_key)
                    if wrapped.kek_id == row.kek_id:
                        unchanged += 1
                        continue
                    row.kek_id, row.wrapped_key = wrapped.kek_id, wrapped.wrapped
                    row.touch()
                    rewrapped += 1
            if len(rows) < batch:
                break
            after = rows[-1].id
        async with self.session_factory() as session:
            counts = await data_key_repository.kek_counts(session)
        return RewrapReport(rewrapped=rewrapped, unchanged=unchanged, kek_ids=counts)

    async def rotate_data_keys(self) -> int:
        """A new data key version for every tenant that has one: new data is encrypted with
        it (by every process within `current_key_ttl_s`); older data keeps reading with the
        version it names until `apiary encryption reencrypt` rewrites it."""
        if self.keks is None:
            raise EncryptionKeyUnavailable(f"encryption at rest is not configured: set {CONFIGURE}")
        async with self.session_factory() as session:
            newest = await data_key_repository.tenants_with_keys(session)
        for tenant_id, version in newest.items():
            await self._create(tenant_id, version=version + 1)
        self._current.clear()
        return len(newest)

    async def current_version(self, tenant_id: uuid.UUID) -> int | None:
        async with self.session_factory() as session:
            row = await data_key_repository.newest(session, tenant_id)
        return None if row is None else row.version

    def forget(self) -> None:
        """Drop every data key held unwrapped, as a restarted process would have none."""
        self._keys.clear()
        self._current.clear()

    async def close(self) -> None:
        if self.keks is not None:
            await self.keks.close()


def random_kek() -> str:
    """A new environment KEK's key, base64 (what `apiary encryption new-kek` prints)."""
    import base64

    return base64.b64encode(os.urandom(32)).decode()


def build_keyring(
    settings: EncryptionSettings, session_factory: async_sessionmaker[AsyncSession]
) -> Keyring:
    """The process's keyring from the settings (nothing is contacted until first use)."""
    return Keyring(
        session_factory,
        keks_from_settings(settings),
        current_key_ttl_s=settings.current_key_ttl_s,
    )
