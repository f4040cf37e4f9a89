"""Virtual environments of their own for clients whose requirements clash with the test
suite's (LlamaIndex's OpenAI integration pins openai below 3; the suite drives /v1 with
openai 3). Made with the Makefile's uv on first use, kept in `.client-venvs/` (ignored by
git), and reused by later runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".client-venvs"
UV = ROOT / ".tools" / "bin" / "uv"


def client_python(name: str, requirements: list[str]) -> Path:
    """The python of venv `name` with `requirements` installed (made on first use)."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    base = str(Path(sys.executable).resolve())  # a venv's python links to its base's
    subprocess.run([str(UV), "venv", "--quiet", "--python", base, str(venv)], check=True)
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(python), *requirements],
        check=True,
    )
    stamp.write_text(wanted)
    return python
