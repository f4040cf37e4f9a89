"""`make deploy-lint`: a check whose tool is missing must say it did not run, never pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PYTHON = ROOT / ".deploy-tools" / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not TOOLS_PYTHON.exists(), reason="the deploy tools venv is built by `make deploy-lint`"
)


def _lint_without_terraform(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A PATH holding only this interpreter's directory: every tool but terraform is found by
    # its path in the tools venv, and no terraform binary is on it.
    bare = tmp_path / "bin"
    bare.mkdir()
    return subprocess.run(
        [str(TOOLS_PYTHON), str(ROOT / "deploy" / "lint" / "deploy_lint.py"), "terraform"],
        env={"PATH": str(bare), "HOME": os.environ.get("HOME", "/tmp"), **env},  # noqa: S108
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_missing_terraform_is_reported_as_not_run(tmp_path: Path) -> None:
    result = _lint_without_terraform(tmp_path)
    assert "NOT RUN" in result.stdout
    assert "no terraform binary" in result.stdout
    assert "passed" not in result.stdout.splitlines()[-1], result.stdout
    assert result.returncode == 0  # locally a warning: the Makefile does not install it


def test_a_missing_terraform_fails_where_every_step_is_required(tmp_path: Path) -> None:
    result = _lint_without_terraform(tmp_path, DEPLOY_LINT_REQUIRE_ALL="1")
    assert result.returncode == 1, result.stdout
    assert "terraform" in result.stdout.splitlines()[-1]
