"""Issue 17's req/s share with tracing on, over several fresh pairs of server processes.

`bench/gateway.py --tracing` measures one untraced and one traced `apiary serve` per build,
started once for the whole run. Two processes of the same build differ by more than the
5% the target allows (docs/benchmarks.md), so one run's share says little. This script
runs it `--runs` times, each run with new processes (and every build in each run, taking
turns), and prints each run's share and, per build, their mean ± standard error, the
range, and how many runs met the target:

    .venv/bin/python bench/tracing_share.py [--runs 5] [--ratio 0.1] [--ref REF ...]

The builds are `--ref` as bench/gateway.py takes them (`.` the working tree, the default).
Each run's JSON stays in bench/results/tracing-share-<date>/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGET = 0.95


def _shares(result: dict[str, object]) -> dict[str, float]:
    """Each build's share at c=10 from one bench/gateway.py result, by build label."""
    found: dict[str, float] = {}
    for key, value in result.items():
        if not key.startswith("traced_vs_untraced_") or not isinstance(value, dict):
            continue
        share = value["rps_share_of_untraced"]["json_c10"]
        rest = key.removeprefix("traced_vs_untraced_")  # "<build>_<level>", or "<level>"
        label = rest.rsplit("_", 1)[0] if "_" in rest else "worktree"
        if share is not None:
            found[label] = share
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--ref", action="append", default=[])
    args = parser.parse_args()
    refs = args.ref or ["."]
    out = BENCH / "results" / f"tracing-share-{dt.datetime.now(dt.UTC):%Y-%m-%dT%H%M}"
    out.mkdir(parents=True, exist_ok=True)
    by_build: dict[str, list[float]] = {}
    for run in range(1, args.runs + 1):
        path = out / f"run-{run}.json"
        command = [
            sys.executable,
            str(BENCH / "gateway.py"),
            "--skip-litellm",
            "--tracing",
            f"--tracing-ratio={args.ratio}",
            "--log-levels=INFO",
            "--modes=json",
            "--concurrencies=10",
            "--repeat=1",
            f"--out={path}",
        ]
        # Every run starts the builds afresh; their order alternates from run to run.
        ordered = refs if run % 2 else list(reversed(refs))
        command += [f"--ref={ref}" for ref in ordered] if len(refs) > 1 else []
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0 and not path.exists():
            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
            return 1
        shares = _shares(json.loads(path.read_text()))
        print(f"run {run}: " + ", ".join(f"{b} {s:.3f}" for b, s in sorted(shares.items())))
        for build, share in shares.items():
            by_build.setdefault(build, []).append(share)
    for build, values in sorted(by_build.items()):
        mean = statistics.fmean(values)
        error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
        met = sum(value >= TARGET for value in values)
        print(
            f"{build}: share {mean:.3f} ± {error:.3f} over {len(values)} runs "
            f"(range {min(values):.3f}-{max(values):.3f}; {met} of {len(values)} at >= {TARGET})"
        )
    print(f"results: {out.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
