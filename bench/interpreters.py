"""The same gateway hot path on different Python builds: CPU per call, side by side.

Apiary is Python, so how its interpreter was built shows in every request: a build with
profile-guided optimization and link-time optimization, with libpython linked into the
executable (Debian's /usr/bin/python3, python-build-standalone), runs the same bytecode in
fewer cycles than a default source build (`./configure --enable-shared`, as pyenv makes
it). For each venv given (each holding Apiary's dependencies on one interpreter, e.g. made
with `uv sync --python X` into `UV_PROJECT_ENVIRONMENT`), this runs bench/hot_path.py
(the ASGI app's CPU per `/v1/chat/completions` call, c=10) in turn for `--rounds` rounds
and prints each one's median and the ratios to the first.

    .venv/bin/python bench/interpreters.py --venv /tmp/venv-pyenv --venv .venv

Wall-clock noise moves CPU time less than throughput, but other work on the machine still
moves it: compare medians of several rounds, taken in turn.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CPU_PER_CALL = re.compile(r"([0-9]+) µs of CPU per call")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--venv", action="append", required=True, help="a venv to measure (repeat it)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="runs of each, taken in turn")
    parser.add_argument("--calls", type=int, default=3000, help="calls per run")
    return parser.parse_args(argv)


def describe(python: Path) -> str:
    """Its version, and whether libpython is a shared library loaded beside it."""
    script = (
        "import sys; maps = open('/proc/self/maps').read(); "
        "print(sys.version.split()[0], "
        "'libpython as a shared library' if 'libpython' in maps else 'libpython linked in')"
    )
    done = subprocess.run(  # noqa: S603 - the venv's own interpreter
        [str(python), "-c", script], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def measure(python: Path, calls: int) -> float:
    done = subprocess.run(  # noqa: S603 - the venv's own interpreter, the sibling script
        [str(python), str(BENCH / "hot_path.py"), "--calls", str(calls), "--concurrency", "10"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = CPU_PER_CALL.search(done.stdout)
    if found is None:
        raise RuntimeError(f"{python}: no figure in\n{done.stdout}{done.stderr}")
    return float(found.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pythons = [Path(venv).absolute() / "bin" / "python" for venv in args.venv]
    for python in pythons:
        print(f"{python}: {describe(python)}", flush=True)
    samples: dict[Path, list[float]] = {python: [] for python in pythons}
    for round_ in range(args.rounds):
        for python in pythons:
            samples[python].append(measure(python, args.calls))
        line = ", ".join(f"{samples[python][-1]:.0f}" for python in pythons)
        print(f"round {round_ + 1}: {line} µs per call", flush=True)
    first = statistics.median(samples[pythons[0]])
    print("\nmedian CPU per call (ASGI app, c=10), and against the first:")
    for python in pythons:
        median = statistics.median(samples[python])
        print(f"  {median:6.0f} µs  {first / median:5.2f}x  {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
