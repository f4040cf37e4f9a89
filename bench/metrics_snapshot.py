"""The README's metrics picture: Grafana's panel queries, run on a real Prometheus that
scraped a running Apiary under real traffic, drawn as one dashboard-like PNG.

    .venv/bin/python bench/metrics_snapshot.py [--minutes 5] [--output PNG]

(default output: docs/img/metrics-dashboard.png, the README's.)

Starts the fake provider (tests/fakes/upstream.py, speaking OpenAI's and Anthropic's wire
formats) in this process, `apiary serve` on SQLite with two providers on it (a route
falls back from `oai` to `claude`), and Debian's Prometheus scraping `/metrics` every 2 s
with deploy/prometheus's rules loaded. Then the traffic, in phases: plain and streamed
chat calls at a rising rate, a spell where the OpenAI provider answers 503 on and off (the
calls fall back to Anthropic and the breaker opens), and some requests refused for a
model nothing serves. Last, each panel's query, read from deploy/grafana/dashboards (not
copied), goes to Prometheus's range API (Grafana's `$__rate_interval` as 20 s, every
`$provider`), and bench/.load-venv's matplotlib draws the grid (the script runs itself
there with `--plot`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus"
PROMETHEUS = "/usr/bin/prometheus"
OUTPUT = ROOT / "docs" / "img" / "metrics-dashboard.png"
SCRAPE_S = 2
# Grafana's $__rate_interval is max(4 x scrape interval, step + scrape interval).
GRAFANA = {"$__rate_interval": "20s", "$provider": ".*"}

# (dashboard, panel title): the grid, row by row.
PANELS = (
    ("apiary-overview", "Responses by status"),
    ("apiary-overview", "Gateway (/v1) latency p50 / p95 / p99"),
    ("apiary-gateway", "Calls by provider and status"),
    ("apiary-gateway", "Circuit breakers (1: open)"),
    ("apiary-gateway", "Upstream latency p95 by model"),
    ("apiary-gateway", "Tokens per second by model"),
)


def panel_queries() -> list[dict[str, Any]]:
    """Each chosen panel's title, unit and (expression, legend) pairs, as the dashboard
    JSON has them."""
    found = []
    for dashboard, title in PANELS:
        panels = json.loads((DASHBOARDS / f"{dashboard}.json").read_text())["panels"]
        [panel] = [p for p in panels if p.get("title") == title]
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        targets = []
        for target in panel["targets"]:
            expression = target["expr"]
            for name, value in GRAFANA.items():
                expression = expression.replace(name, value)
            targets.append((expression, target.get("legendFormat") or ""))
        found.append({"dashboard": dashboard, "title": title, "unit": unit, "targets": targets})
    return found


# -- the run (Apiary's venv) -----------------------------------------------------------------


def _config(upstream_url: str) -> str:
    return (
        "providers:\n"
        "  - name: oai\n"
        "    kind: openai\n"
        f"    base_url: {upstream_url}/v1\n"
        "    api_key: sk-fake-upstream\n"
        "    models: [gpt-4o-mini, gpt-4o]\n"
        "  - name: claude\n"
        "    kind: anthropic\n"
        f"    base_url: {upstream_url}\n"
        "    api_key: sk-fake-upstream\n"
        "    models: [claude-sonnet-4]\n"
        "routes:\n"
        "  default: {models: [oai/gpt-4o-mini, claude/claude-sonnet-4]}\n"
    )


def _start_prometheus(workdir: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    import yaml
    from gateway import free_port

    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": "2s"},
                "rule_files": [str(path) for path in sorted(RULES.glob("*.rules.yml"))],
                "scrape_configs": [
                    {"job_name": "apiary", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - Debian's binary, arguments built here
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process, f"http://127.0.0.1:{port}"


async def _paced(rate: float, seconds: float, send: Any) -> None:
    """`send()` `rate` times a second for `seconds`, each in a task of its own."""
    tasks: set[asyncio.Task[Any]] = set()
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            task = asyncio.create_task(send())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks, return_exceptions=True)


async def _traffic(url: str, key: str, upstream: Any, minutes: float) -> None:
    import httpx

    from tests.fakes.upstream import Fail, Reply, Slow

    unit = minutes * 60 / 10  # the phases' lengths, in tenths of the run
    answer = Reply(text="all systems nominal", usage=(40, 120))
    chat = {"model": "default", "messages": [{"role": "user", "content": "status report"}]}
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        limits=httpx.Limits(max_connections=64),
    ) as http:

        async def plain() -> None:
            await http.post("/v1/chat/completions", json=chat)

        async def streamed() -> None:
            async with http.stream(
                "POST", "/v1/chat/completions", json={**chat, "stream": True}
            ) as response:
                async for _ in response.aiter_bytes():
                    pass

        async def unknown_model() -> None:
            await http.post("/v1/chat/completions", json={**chat, "model": "gpt-9-nonexistent"})

        # Upstream answers take 20-120 ms, as a fast provider's short answers do.
        upstream.set_default("openai", Slow(0.02, answer))
        upstream.set_default("anthropic", Slow(0.12, answer))

        async def mix(rate: float, seconds: float, refused: float = 0.0) -> None:
            await asyncio.gather(
                _paced(rate * 0.75, seconds, plain),
                _paced(rate * 0.25, seconds, streamed),
                *([_paced(refused, seconds, unknown_model)] if refused else []),
            )

        print(f"traffic: {minutes:g} minutes in phases", flush=True)
        await mix(10, 2 * unit)
        await mix(25, 2 * unit)
        # OpenAI answers 503 for 10 s in every 20: calls fall back to Anthropic.

        async def flap() -> None:
            while True:
                upstream.set_default("openai", Fail(503))
                await asyncio.sleep(10)
                upstream.set_default("openai", Slow(0.02, answer))
                await asyncio.sleep(10)

        flapping = asyncio.create_task(flap())
        await mix(25, 3 * unit)
        flapping.cancel()
        upstream.set_default("openai", Slow(0.02, answer))
        await mix(15, 3 * unit, refused=2)


def run(minutes: float, data_path: Path) -> None:
    import httpx
    from gateway import (
        ADMIN_EMAIL,
        VENV,
        Services,
        _apiary,
        clean_env,
        free_port,
        wait_http,
    )

    from tests.fakes.upstream import FakeUpstream

    async def main() -> None:
        services = Services()
        upstream = FakeUpstream(record_requests=False)
        await upstream.start()
        prometheus: subprocess.Popen[bytes] | None = None
        with tempfile.TemporaryDirectory(prefix="apiary-metrics-") as tmp:
            workdir = Path(tmp)
            try:
                (workdir / "apiary.yaml").write_text(_config(upstream.base_url))
                port = free_port()
                env = clean_env(
                    APIARY_DATA_DIR=str(workdir / "data"),
                    APIARY_CONFIG=str(workdir / "apiary.yaml"),
                    APIARY_HOST="127.0.0.1",
                    APIARY_PORT=str(port),
                    APIARY_LOG_LEVEL="WARNING",
                )
                _apiary(env, "migrate")
                _apiary(
                    env,
                    "admin",
                    "create-tenant",
                    "acme",
                    "--plan",
                    "enterprise",
                    "--admin-email",
                    ADMIN_EMAIL,
                    "--admin-password",
                    secrets.token_urlsafe(18),
                )
                key = json.loads(
                    _apiary(
                        env, "admin", "create-api-key", "--tenant", "acme", "--role", "developer"
                    )
                )["key"]
                apiary = services.start(
                    "apiary",
                    [str(VENV / "bin" / "apiary"), "serve"],
                    cpu=1,
                    env=env,
                    log=workdir / "serve.log",
                )
                url = f"http://127.0.0.1:{port}"
                await asyncio.to_thread(wait_http, apiary, f"{url}/healthz", timeout_s=60)
                # A loopback scraper needs no token (APIARY_METRICS_TOKEN unset).
                prometheus, prometheus_url = _start_prometheus(workdir, f"127.0.0.1:{port}")
                async with httpx.AsyncClient(base_url=prometheus_url, timeout=10) as http:
                    for _ in range(150):
                        try:
                            if (await http.get("/-/ready")).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(2 * SCRAPE_S)  # a first scrape before the traffic
                    start = time.time()
                    await _traffic(url, key, upstream, minutes)
                    await asyncio.sleep(3 * SCRAPE_S)  # the last requests scraped
                    end = time.time()
                    panels = panel_queries()
                    for panel in panels:
                        panel["series"] = []
                        for expression, legend in panel["targets"]:
                            answer = await http.get(
                                "/api/v1/query_range",
                                params={"query": expression, "start": start, "end": end, "step": 5},
                            )
                            answer.raise_for_status()
                            for series in answer.json()["data"]["result"]:
                                panel["series"].append(
                                    {
                                        "label": _legend(legend, series["metric"]),
                                        "points": [
                                            [t - start, float(v)] for t, v in series["values"]
                                        ],
                                    }
                                )
                await asyncio.to_thread(
                    data_path.write_text,
                    json.dumps(
                        {
                            "taken": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                            "minutes": minutes,
                            "panels": panels,
                        }
                    ),
                )
            finally:
                if prometheus is not None:
                    prometheus.terminate()
                    prometheus.wait(timeout=20)
                services.stop_all()
                await upstream.stop()

    asyncio.run(main())


def _legend(template: str, labels: dict[str, str]) -> str:
    if not template:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


# -- the picture (bench/.load-venv) ----------------------------------------------------------


def plot(data_path: Path, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(data_path.read_text())
    plt.style.use("dark_background")
    figure, axes = plt.subplots(3, 2, figsize=(14, 11), facecolor="#111217")
    for ax, panel in zip(axes.flat, data["panels"], strict=True):
        ax.set_facecolor("#181b1f")
        for series in sorted(panel["series"], key=lambda s: s["label"]):
            times = [t / 60 for t, _ in series["points"]]
            values = [v for _, v in series["points"]]
            ax.plot(times, values, linewidth=1.6, label=series["label"])
        ax.set_title(panel["title"], loc="left", fontsize=11, color="#d8d9da")
        unit = {"s": "seconds", "percentunit": "ratio", "reqps": "req/s"}.get(panel["unit"], "")
        ax.set_ylabel(unit, color="#9fa7b3", fontsize=9)
        ax.set_xlabel("minutes", color="#9fa7b3", fontsize=9)
        ax.grid(color="#2c3235", linewidth=0.6)
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        if panel["series"]:
            ax.legend(fontsize=7, loc="upper left", framealpha=0.3, ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes, color="#9fa7b3")
    figure.suptitle(
        f"Apiary: Grafana panel queries on a live Prometheus ({data['minutes']:g} min of "
        f"traffic through the fake provider, {data['taken']})",
        color="#d8d9da",
        fontsize=12,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90, facecolor=figure.get_facecolor())
    print(output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--plot", type=Path, metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plot is not None:  # the second half, in the load venv
        plot(args.plot, args.output)
        return 0
    sys.path.insert(0, str(BENCH))  # bench/gateway.py's helpers
    sys.path.append(str(ROOT))  # tests.fakes
    from load import LOAD_VENV, ensure_load_venv

    ensure_load_venv()
    with tempfile.TemporaryDirectory(prefix="apiary-metrics-data-") as tmp:
        data = Path(tmp) / "panels.json"
        run(args.minutes, data)
        subprocess.run(  # noqa: S603 - this script, in the load venv
            [
                str(LOAD_VENV / "bin" / "python"),
                __file__,
                "--plot",
                str(data),
                "--output",
                str(args.output),
            ],
            check=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
