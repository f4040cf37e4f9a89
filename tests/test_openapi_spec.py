"""The dashboard's API client is generated from web/openapi.json: it must be the current spec."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from apiary.cli import app

SPEC = Path(__file__).resolve().parent.parent / "web" / "openapi.json"


def test_committed_openapi_json_is_the_current_spec(tmp_path: Path) -> None:
    fresh = tmp_path / "openapi.json"
    result = CliRunner().invoke(app, ["openapi", "--output", str(fresh)])
    assert result.exit_code == 0, result.output
    assert orjson.loads(fresh.read_bytes()) == orjson.loads(SPEC.read_bytes()), (
        "web/openapi.json is stale: run `make web-api` and commit web/openapi.json "
        "and web/src/api/schema.d.ts"
    )
    assert fresh.read_text() == SPEC.read_text()
