"""Plots of one bench/load.py run: latency, throughput and RSS over time, as PNGs.

Runs in bench/.load-venv (matplotlib lives there, not in Apiary's venv):

    bench/.load-venv/bin/python bench/load_plot.py RESULT.json docs/img/load-<profile>

writes <prefix>-latency.png, <prefix>-throughput.png and <prefix>-rss.png and prints their
paths. Time is minutes since the first Locust step started; a peak run's steps follow one
another on the same axis, each labelled with its target rate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _history(result: dict[str, Any]) -> list[dict[str, Any]]:
    # Locust's history rows: one a second, the Aggregated row's "current" figures (its
    # percentiles over the last ~10 s); rows before the users all started report zeros.
    rows = []
    for step in result["steps"]:
        for row in step["history"]:
            if row["Name"] != "Aggregated" or row["95%"] in ("", "N/A"):
                continue
            rows.append(
                {
                    "t": float(row["Timestamp"]),
                    "rate": step["rate"],
                    "rps": float(row["Requests/s"]),
                    "fps": float(row["Failures/s"]),
                    "p50": float(row["50%"]),
                    "p95": float(row["95%"]),
                }
            )
    return rows


def main() -> None:
    result = json.loads(Path(sys.argv[1]).read_text())
    prefix = Path(sys.argv[2])
    prefix.parent.mkdir(parents=True, exist_ok=True)
    start = result["steps"][0]["started_at"] if result["steps"] else 0.0
    rows = _history(result)
    kind = "smoke run" if result.get("smoke", result["quick"]) else "full run"
    title = f"{result['profile']} ({result['commit']}, {kind})"
    written = []

    def minutes(t: float) -> float:
        return (t - start) / 60

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot([minutes(r["t"]) for r in rows], [r["p50"] for r in rows], label="p50")
    axis.plot([minutes(r["t"]) for r in rows], [r["p95"] for r in rows], label="p95")
    limit = 2000 if result["profile"] == "peak" else 500
    axis.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"p95 limit {limit} ms")
    axis.set(xlabel="minutes", ylabel="ms (Apiary's share)", title=f"Latency, {title}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(f"{prefix}-latency.png", dpi=100)
    written.append(f"{prefix}-latency.png")

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot([minutes(r["t"]) for r in rows], [r["rps"] for r in rows], label="requests/s")
    axis.plot([minutes(r["t"]) for r in rows], [r["fps"] for r in rows], label="failures/s")
    axis.step(
        [minutes(r["t"]) for r in rows],
        [r["rate"] for r in rows],
        where="post",
        linestyle="--",
        label="target",
    )
    axis.set(xlabel="minutes", ylabel="req/s", title=f"Throughput, {title}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(f"{prefix}-throughput.png", dpi=100)
    written.append(f"{prefix}-throughput.png")

    samples = result["samples"]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    names = sorted({name for s in samples for name in s["pss_mib"]})
    for name in names:
        points = [  # load.py's private_mib (this script runs in the load venv, apart)
            (minutes(s["t"]), s["pss_mib"][name] - s.get("shmem_mib", {}).get(name, 0.0))
            for s in samples
            if name in s["pss_mib"]
        ]
        axis.plot([p[0] for p in points], [p[1] for p in points], label=name, marker=".")
    if result["profile"] == "soak" and result["steps"]:
        axis.axvline(minutes(start + result["warmup_s"]), color="grey", linestyle=":")
    ylabel = "MiB (PSS less shared memory, per process tree)"
    axis.set(xlabel="minutes", ylabel=ylabel, title=f"Memory, {title}")
    axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(f"{prefix}-rss.png", dpi=100)
    written.append(f"{prefix}-rss.png")
    print("\n".join(written))


if __name__ == "__main__":
    main()
