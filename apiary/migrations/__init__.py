"""Alembic migrations; run with `apiary migrate`.

Alembic (with Mako) is imported only to migrate: a serving process that imported it for
`/readyz` would carry some 12 MiB more. The revisions this code knows are read from the
version files themselves, a linear chain (tests/test_migrations.py checks it against
Alembic's own reading).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent
_REVISION = re.compile(r'^revision: str = "(\w+)"$', re.M)
_DOWN_REVISION = re.compile(r'^down_revision: str \| None = (?:"(\w+)"|None)$', re.M)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


@cache
def revisions() -> tuple[str, ...]:
    """Every revision this code knows, newest (the head) first."""
    parent_of: dict[str, str | None] = {}
    for version in (_HERE / "versions").glob("*.py"):
        text = version.read_text()
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            raise RuntimeError(f"{version.name}: no `revision` / `down_revision` line")
        parent_of[revision.group(1)] = down.group(1)
    children = {parent for parent in parent_of.values() if parent is not None}
    heads = [revision for revision in parent_of if revision not in children]
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    chain: list[str] = []
    current: str | None = heads[0]
    while current is not None:
        chain.append(current)
        current = parent_of[current]
    return tuple(chain)


def schema_problem(current: str | None) -> str | None:
    """Why a database at revision `current` (None: never migrated) cannot serve this code,
    or None when it can. A revision this code does not know is taken as newer: a release's
    migration runs before its pods, and the old ones keep serving until they are replaced."""
    known = revisions()
    if current is None:
        return "not migrated: run `apiary migrate`"
    if current != known[0] and current in known:
        return f"schema at revision {current}, this code needs {known[0]}: run `apiary migrate`"
    return None
