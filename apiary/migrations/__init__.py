"""Alembic migrations; run with `apiary migrate`."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

_HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


@cache
def revisions() -> tuple[str, ...]:
    """Every revision this code knows, newest (the head) first."""
    script = ScriptDirectory.from_config(alembic_config(""))
    return tuple(revision.revision for revision in script.walk_revisions())


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
