"""docs/schema.graphql is the schema /graphql serves, as its clients read it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from apiary.cli import app

SDL = Path(__file__).resolve().parents[2] / "docs" / "schema.graphql"


def test_committed_schema_graphql_is_the_current_schema(tmp_path: Path) -> None:
    fresh = tmp_path / "schema.graphql"
    result = CliRunner().invoke(app, ["graphql-schema", "--output", str(fresh)])
    assert result.exit_code == 0, result.output
    assert fresh.read_text() == SDL.read_text(), (
        "docs/schema.graphql is stale: run `make graphql-schema` and commit it"
    )


def test_the_schema_shows_no_secret_of_an_api_key() -> None:
    sdl = SDL.read_text()
    api_key = sdl.split("type ApiKey {", 1)[1].split("}", 1)[0]
    fields = {line.split(":")[0].strip() for line in api_key.splitlines() if ":" in line}
    assert fields == {
        "id",
        "name",
        "prefix",
        "role",
        "createdBy",
        "createdAt",
        "expiresAt",
        "lastUsedAt",
        "revokedAt",
    }
