"""Load and soak (issue 16): Locust against the production topology, scaled to this machine.

Brings up tests/topology/harness.py's topology (its own PostgreSQL and Redis, two `apiary
serve` replicas, two Celery `apiary worker`s, the fake upstream in this process's event
loop, answering each chat call after 0.2-1.5 s), seeds a tenant (its admin signed in for
the dashboard, a developer API key, agents whose swarms have 2 or 3 sub-agents), then runs
Locust headless (its own venv, bench/.load-venv, created on first use) with the mix in
bench/load_locustfile.py, while a sampler records every process's memory and CPU, open
connections and the database's size.

    .venv/bin/python bench/load.py --quick                    # a smoke run, about a minute
    .venv/bin/python bench/load.py --profile steady           # 100 req/s, 15 minutes
    .venv/bin/python bench/load.py --profile peak             # 100, 150, 200, 300, ... req/s
    .venv/bin/python bench/load.py --profile soak             # 50 req/s, an hour
    .venv/bin/python bench/load.py --profile steady --duration 120 --rate 100

The plan's figures (100 req/s for an hour, 500 req/s peak for 10 minutes, a 24 h soak at
50 req/s) are for production hardware; here everything shares two cores with the load
generator, so the profiles are shorter and the verdicts are:

- steady: p95 < 500 ms over the run, no failures, and at least 95% of the target rate sent;
- peak: each step (a Locust run of `--duration`, 2 minutes by default) passes with p95 < 2 s
  and no failures; the steps go up until one fails, and the highest passing rate is reported;
- soak: for every process tree, its memory's growth over the window after `--warmup` (the
  slope of a least-squares line through its samples, times the window's length) within 5%
  of its mean over that window, plus the steady criteria at the soak rate. Memory is PSS
  summed over the tree (RSS with shared pages divided among their sharers: PostgreSQL's
  backends all map its shared buffers, so their RSS sum counts them once per backend), less
  its part in shared memory segments: that part is PostgreSQL's buffer cache, which fills
  as the database grows, and is judged instead against the segment's size (`SHOW
  shared_memory_size`). RSS, PSS and the shared part are all recorded.

p95 is Locust's, over every request of the run; a `/v1` call counts what Apiary adds (its
time less the fake upstream's delay for it, see the locustfile). It prints a table beside
the plan's numbers, writes bench/results/load-<profile>-<date>.json and PNG plots (latency,
throughput, memory over time) to docs/img/load-<profile>-*.png (`-smoke` in both names
for a run shorter than the profile's). Everything it starts, it stops; the processes' and
Locust's logs stay in the work directory it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.topology, run as a script

from apiary.worker.celery_app import QUEUE as CELERY_QUEUE  # noqa: E402
from tests.fakes import Reply  # noqa: E402
from tests.topology.conftest import new_key, new_tenant  # noqa: E402
from tests.topology.harness import Topology  # noqa: E402

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PLOTS = ROOT / "docs" / "img"
LOAD_VENV = BENCH / ".load-venv"
LOCUSTFILE = BENCH / "load_locustfile.py"
PLOTTER = BENCH / "load_plot.py"
GIT = shutil.which("git") or "/usr/bin/git"
# Pinned: the figures of one run are comparable with the next only on the same Locust.
LOAD_PACKAGES = ("locust==2.47.0", "matplotlib==3.11.2")

UPSTREAM_DELAY_S = (0.2, 1.5)
# Each user sends a request every USER_INTERVAL_S, so a chat call (up to 1.5 s upstream)
# fits in one beat and the users together keep the rate.
USER_INTERVAL_S = 2.0
SWARMS = {2: "plan two things for the load test", 3: "plan three things for the load test"}

# The plan's profiles, and this machine's (rate req/s, duration s).
PLAN = {
    "steady": "100 req/s for 1 h, p95 < 500 ms, 0 errors",
    "peak": "500 req/s for 10 min, p95 < 2 s, 0 errors",
    "soak": "50 req/s for 24 h, RSS flat",
}
PROFILES = {"steady": (100.0, 900.0), "peak": (100.0, 120.0), "soak": (50.0, 3600.0)}
PEAK_STEPS = (100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 650.0, 800.0)
STEADY_P95_MS = 500.0
PEAK_P95_MS = 2000.0
RSS_FLAT = 0.05


# -- the load venv ---------------------------------------------------------------------------


def ensure_load_venv() -> Path:
    """bench/.load-venv with Locust and matplotlib, made on first use on this interpreter."""
    locust = LOAD_VENV / "bin" / "locust"
    if locust.exists():
        return locust
    base = str(Path(sys.executable).resolve())  # a venv's python links to its base's
    print(f"creating {LOAD_VENV} ({', '.join(LOAD_PACKAGES)}) ...", flush=True)
    subprocess.run([base, "-m", "venv", str(LOAD_VENV)], check=True)  # noqa: S603 - fixed
    pip = [str(LOAD_VENV / "bin" / "pip"), "install", "--quiet", *LOAD_PACKAGES]
    subprocess.run(pip, check=True)  # noqa: S603 - pinned packages named here
    return locust


# -- seeding ---------------------------------------------------------------------------------


async def seed(topology: Topology) -> dict[str, Any]:
    """A tenant with its admin signed in, a developer key, a chat agent and two swarm
    agents; the upstream told their plans. Returns what the locustfile needs."""
    tenant = await new_tenant(topology, "load")
    _, key = await new_key(topology, tenant)
    agents: list[dict[str, str]] = []
    async with topology.http("api-a") as http:
        auth = {"Authorization": f"Bearer {key}"}
        for count, task in SWARMS.items():
            created = await http.post(
                "/api/v1/agents",
                headers=auth,
                json={"name": f"swarm-{count}", "model": "default", "max_subagents": count},
            )
            created.raise_for_status()
            agents.append({"id": created.json()["id"], "task": task})
            plan = [f"load subtask {i + 1} of {count}" for i in range(count)]
            topology.upstream.answers[task] = Reply(
                text=orjson.dumps({"subtasks": plan}).decode(), usage=(20, 20)
            )
        created = await http.post(
            "/api/v1/agents", headers=auth, json={"name": "chat", "model": "default"}
        )
        created.raise_for_status()
    return {
        "hosts": [topology.url("api-a"), topology.url("api-b")],
        "api_key": key,
        "token": tenant.token,
        "chat_model": "default",
        "swarm_agents": agents,
        "upstream_delay_s": list(UPSTREAM_DELAY_S),
    }


# -- the sampler -----------------------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, process group, CPU seconds) of a live process, its reaped children's
    included: PostgreSQL's backends that closed (a pool's overflow connections) would
    otherwise take their CPU out of the tree's sum and hide it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime
    return int(fields[1]), int(fields[2]), sum(int(x) for x in fields[11:15]) / TICKS


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0


def _pss(pid: int) -> tuple[int, int]:
    """(PSS, its shared-memory part): the proportional set size is RSS with each shared
    page divided among its sharers, so a tree's sum counts PostgreSQL's shared buffers (or
    a forked pool's pages) once; `Pss_Shmem` is the part in shared memory segments, which
    for PostgreSQL is its buffer cache, filling up to `shared_buffers` as pages are read."""
    pss = shmem = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith("Pss_Shmem:"):
                shmem = int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return pss, shmem


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _tree(root: int, table: dict[int, tuple[int, int, float]]) -> list[int]:
    """`root` and its descendants (a Celery worker's pool, PostgreSQL's backends)."""
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        found += children
        frontier += children
    return [pid for pid in found if pid in table]


@dataclass
class Sampler:
    topology: Topology
    interval_s: float
    locust_pid: int | None = None

    def __post_init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self._cpu: dict[str, float] = {}
        self._at = time.monotonic()
        self._machine = _machine_ticks()

    def roots(self) -> dict[str, int]:
        roots = {name: p.pid for name, p in self.topology.processes.items() if p.alive()}
        pg_pid = self.topology._pg_data() / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            roots["postgres"] = int(pg_pid.read_text().split()[0])
        redis_pid = self.topology.workdir / "services" / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            roots["redis"] = int(redis_pid.read_text().split()[0])
        roots["upstream+runner"] = os.getpid()
        if self.locust_pid is not None:
            roots["locust"] = self.locust_pid
        return roots

    async def sample(self) -> dict[str, Any]:
        table = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (stat := _stat(int(entry))) is not None:
                table[int(entry)] = stat
        now = time.monotonic()
        elapsed = max(now - self._at, 1e-6)
        rss_mib: dict[str, float] = {}
        pss_mib: dict[str, float] = {}
        shmem_mib: dict[str, float] = {}
        cpu_pct: dict[str, float] = {}
        for name, root in self.roots().items():
            pids = [root] if name == "upstream+runner" else _tree(root, table)
            rss_mib[name] = sum(_rss(pid) for pid in pids) / 2**20
            sizes = [_pss(pid) for pid in pids]
            pss_mib[name] = sum(pss for pss, _ in sizes) / 2**20
            shmem_mib[name] = sum(shmem for _, shmem in sizes) / 2**20
            cpu = sum(table[pid][2] for pid in pids)
            if name in self._cpu:
                cpu_pct[name] = 100 * max(0.0, cpu - self._cpu[name]) / elapsed
            self._cpu[name] = cpu
        self._at = now
        busy, total = _machine_ticks()
        if total > self._machine[1]:
            # Every core's busy share (200% = both), ours and other people's work alike.
            cores = os.cpu_count() or 1
            share = (busy - self._machine[0]) / (total - self._machine[1])
            cpu_pct["machine"] = 100 * cores * share
        self._machine = (busy, total)
        sample: dict[str, Any] = {
            "t": time.time(),
            "rss_mib": rss_mib,
            "pss_mib": pss_mib,
            "shmem_mib": shmem_mib,
            "cpu_pct": cpu_pct,
        }
        dsn = self.topology.database_url.replace("postgresql+asyncpg://", "postgresql://")
        with contextlib.suppress(Exception):
            connection = await asyncpg.connect(dsn, timeout=5)
            try:
                rows = await connection.fetch(
                    "SELECT coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' GROUP BY 1"
                )
                sample["pg_states"] = {row["state"]: row["n"] for row in rows}
                sample["pg_connections"] = sum(row["n"] for row in rows)
                # What a transaction left open was doing last: which code holds them.
                rows = await connection.fetch(
                    "SELECT left(query, 100) AS query, count(*) AS n FROM pg_stat_activity"
                    " WHERE state = 'idle in transaction' GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
                )
                sample["pg_idle_in_transaction"] = {row["query"]: row["n"] for row in rows}
                # Sessions ever opened: its growth is connection churn (a pool's overflow
                # connections opened and closed), each a backend forked and authenticated.
                sample["pg_sessions_opened"] = await connection.fetchval(
                    "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                )
                # The shared memory segment's whole size (buffers and the rest): the
                # bound on the PostgreSQL tree's `Pss_Shmem`.
                sample["pg_shared_memory_mib"] = await connection.fetchval(
                    "SELECT setting::float8 FROM pg_settings"
                    " WHERE name = 'shared_memory_size' AND unit = 'MB'"
                )
                sample["db_size_mib"] = (
                    await connection.fetchval("SELECT pg_database_size(current_database())") / 2**20
                )
            finally:
                await connection.close()
        with contextlib.suppress(Exception):
            client = aioredis.from_url(self.topology.redis_url)
            try:
                sample["redis_clients"] = (await client.info("clients"))["connected_clients"]
                sample["queued_executions"] = await client.llen(CELERY_QUEUE)
            finally:
                await client.aclose()
        with contextlib.suppress(OSError):
            sample["load_average"] = os.getloadavg()[0]
        self.samples.append(sample)
        return sample

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)


async def drain(topology: Topology, timeout_s: float = 120.0) -> None:
    """Until the workers have taken every queued execution: a peak step must not start
    with the last one's backlog."""
    client = aioredis.from_url(topology.redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not await client.llen(CELERY_QUEUE):
                return
            await asyncio.sleep(1)
    finally:
        await client.aclose()


# -- one Locust run --------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    duration_s: float
    stats: list[dict[str, str]]
    history: list[dict[str, str]]
    watchers: dict[str, Any]
    started_at: float

    @property
    def total(self) -> dict[str, str]:
        return next(row for row in self.stats if row["Name"] == "Aggregated")

    @property
    def requests(self) -> int:
        return int(self.total["Request Count"])

    @property
    def failures(self) -> int:
        return int(self.total["Failure Count"])

    @property
    def p50_ms(self) -> float:
        return float(self.total["50%"])

    @property
    def p95_ms(self) -> float:
        return float(self.total["95%"])

    @property
    def achieved(self) -> float:
        return float(self.total["Requests/s"])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


async def locust_run(
    locust: Path,
    seeded: dict[str, Any],
    *,
    rate: float,
    duration_s: float,
    workdir: Path,
    sampler: Sampler,
) -> Step:
    users = max(4, math.ceil(rate * USER_INTERVAL_S))
    prefix = workdir / f"locust-{rate:g}"
    config = workdir / f"locust-config-{rate:g}.json"
    config.write_text(json.dumps(seeded | {"per_user_rate": rate / users}))
    watchers = workdir / f"watchers-{rate:g}.json"
    # Users start over 10 s (or a tenth of a short run); --reset-stats drops the ramp.
    spawn_rate = max(1.0, users / min(10.0, duration_s / 10))
    argv = [str(locust), "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    argv += ["-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{int(duration_s)}s"]
    # --csv-full-history: the history's percentiles over Locust's last ~10 s, not since the
    # start (without it they are cumulative, and a plot over time only shows their average)
    argv += ["--csv", str(prefix), "--csv-full-history", "--reset-stats", "--stop-timeout", "5"]
    argv += ["--host", sampler.topology.url("api-a"), "--loglevel", "WARNING"]
    env = dict(os.environ)
    env |= {"APIARY_LOAD_CONFIG": str(config), "APIARY_LOAD_WATCHERS": str(watchers)}
    started_at = time.time()
    log = (workdir / f"locust-{rate:g}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    sampler.locust_pid = process.pid
    try:
        await process.wait()
    except asyncio.CancelledError:  # Ctrl-C (or SIGINT to this process alone): stop Locust too
        if process.returncode is None:
            process.terminate()
            await process.wait()
        raise
    finally:
        log.close()
    sampler.locust_pid = None
    if not Path(f"{prefix}_stats.csv").exists():  # noqa: ASYNC240 - once, after the run
        tail = (workdir / f"locust-{rate:g}.log").read_text()[-3000:]
        raise RuntimeError(f"Locust wrote no stats (exit {process.returncode}):\n{tail}")
    return Step(
        rate=rate,
        duration_s=duration_s,
        stats=_read_csv(Path(f"{prefix}_stats.csv")),
        history=_read_csv(Path(f"{prefix}_stats_history.csv")),
        watchers=json.loads(watchers.read_text()) if watchers.exists() else {},
        started_at=started_at,
    )


# -- verdicts --------------------------------------------------------------------------------


def private_mib(sample: dict[str, Any], name: str) -> float:
    """A process tree's memory less what it holds in shared memory segments: what a leak
    would grow. For PostgreSQL that leaves out its buffer cache, which fills up to
    `shared_buffers` as the database grows and is judged against that bound instead."""
    return float(sample["pss_mib"][name] - sample.get("shmem_mib", {}).get(name, 0.0))


def memory_of(sample: dict[str, Any], name: str) -> float | None:
    """The memory a soak judges for one process tree in one sample: its private memory;
    for PostgreSQL, per client connection. PostgreSQL forks a backend per connection, each
    with its own catalog and plan caches, and the replicas' and workers' pools open
    connections as load needs them, up to their bounds: its total grows with that count,
    while a leak would grow what each backend holds."""
    if name not in sample["pss_mib"]:
        return None
    private = private_mib(sample, name)
    if name != "postgres":
        return private
    connections = sample.get("pg_connections")
    return private / connections if connections else None


def rss_growth(
    samples: list[dict[str, Any]], since: float, until: float = math.inf
) -> dict[str, float]:
    """Per process tree: the least-squares slope of `memory_of` over the samples taken
    between `since` and `until` (after the warm-up, while the load ran), times the
    window's length, as a fraction of the window's mean (0.05 = grew 5%)."""
    window = [s for s in samples if since <= s["t"] <= until]
    growth: dict[str, float] = {}
    names = {name for s in window for name in s["pss_mib"] if name != "locust"}
    for name in sorted(names):
        points = [(s["t"], y) for s in window if (y := memory_of(s, name)) is not None]
        if len(points) < 3:
            continue
        ts, ys = [p[0] for p in points], [p[1] for p in points]
        mean_t, mean_y = sum(ts) / len(ts), sum(ys) / len(ys)
        var = sum((t - mean_t) ** 2 for t in ts)
        if var == 0 or mean_y == 0:
            continue
        slope = sum((t - mean_t) * (y - mean_y) for t, y in points) / var
        growth[name] = slope * (ts[-1] - ts[0]) / mean_y
    return growth


def soak_checks(
    samples: list[dict[str, Any]], since: float, until: float
) -> tuple[dict[str, float], list[tuple[str, str, bool]]]:
    """The soak's memory verdicts: each tree flat after the warm-up, PostgreSQL's buffer
    cache within its segment."""
    growth = rss_growth(samples, since, until)
    checks = []
    for name, value in growth.items():
        what = "memory of postgres per connection" if name == "postgres" else f"memory of {name}"
        checks.append(
            (f"{what} flat within 5%", f"{100 * value:+.1f}% after warm-up", abs(value) <= RSS_FLAT)
        )
    window = [s for s in samples if since <= s["t"] <= until and "pg_connections" in s]
    if window:
        first, last = window[0]["pg_connections"], window[-1]["pg_connections"]
        most = max(s["pg_connections"] for s in window)
        print(f"  PostgreSQL client connections after warm-up: {first} -> {last} (at most {most})")
    return growth, checks + shared_memory_checks(samples)


def judge(path: Path) -> int:
    """The soak verdicts of a recorded run (bench/results/load-soak-*.json), as `run` gives
    them: for a run recorded before a verdict changed."""
    result = json.loads(path.read_text())
    if result["profile"] != "soak" or not result["steps"]:
        raise SystemExit(f"{path}: not a soak run")
    step = result["steps"][0]
    since = step["started_at"] + result["warmup_s"]
    until = step["started_at"] + result["duration_s"]
    _, checks = soak_checks(result["samples"], since, until)
    measured = f"{step['rate']:g} req/s for {result['duration_s']:g} s, commit {result['commit']}"
    return 0 if print_verdict("soak", checks, measured) else 1


def shared_memory_checks(samples: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """PostgreSQL's buffer cache, left out of its memory's slope (`private_mib`), must stay
    within the shared memory segment it was given."""
    held = [s["shmem_mib"]["postgres"] for s in samples if "postgres" in s.get("shmem_mib", {})]
    bounds = [s["pg_shared_memory_mib"] for s in samples if s.get("pg_shared_memory_mib")]
    if not held or not bounds:
        return []
    peak, bound = max(held), min(bounds)
    return [
        (
            "PostgreSQL's shared memory in its segment",
            f"at most {peak:.0f} of {bound:.0f} MiB",
            peak <= bound,
        )
    ]


def steady_checks(step: Step, p95_limit: float) -> list[tuple[str, str, bool]]:
    return [
        (f"p95 < {p95_limit:g} ms", f"{step.p95_ms:g} ms", step.p95_ms < p95_limit),
        ("0 failures", f"{step.failures} of {step.requests}", step.failures == 0),
        (
            ">= 95% of the target rate",
            f"{step.achieved:.1f} of {step.rate:g} req/s",
            step.achieved >= 0.95 * step.rate,
        ),
    ]


# -- output ----------------------------------------------------------------------------------


def print_step(step: Step) -> None:
    print(f"\n{step.rate:g} req/s target for {step.duration_s:g} s:")
    print(
        f"  {'request':48} {'count':>7} {'fail':>5} {'req/s':>7} {'p50':>6} {'p95':>6} {'max':>7}"
    )
    for row in step.stats:
        print(
            f"  {row['Name'][:48]:48} {row['Request Count']:>7} {row['Failure Count']:>7} "
            f"{float(row['Requests/s']):7.1f} {row['50%']:>7} {row['95%']:>7} "
            f"{float(row['Max Response Time']):7.0f}"
        )
    if step.watchers:
        print(f"  SSE watchers: {json.dumps(step.watchers)}")


def print_samples(samples: list[dict[str, Any]]) -> None:
    if not samples:
        return
    first, last = samples[0], samples[-1]
    print("\nmemory, first -> last sample (MiB, summed over each process tree), mean CPU:")
    names = {name: None for s in samples for name in s["rss_mib"]}
    for name in names:
        cpus = [s["cpu_pct"][name] for s in samples if name in s.get("cpu_pct", {})]
        mean_cpu = sum(cpus) / len(cpus) if cpus else 0.0
        seen = [s for s in samples if s["rss_mib"].get(name)]  # Locust's only while it ran
        if not seen:
            continue
        rss = f"{seen[0]['rss_mib'][name]:7.1f} -> {seen[-1]['rss_mib'][name]:7.1f}"
        pss = f"{seen[0]['pss_mib'][name]:7.1f} -> {seen[-1]['pss_mib'][name]:7.1f}"
        own = f"{private_mib(seen[0], name):7.1f} -> {private_mib(seen[-1], name):7.1f}"
        print(f"  {name:16} RSS {rss}   PSS {pss}   private {own}   CPU {mean_cpu:5.1f}%")
    machine = [s["cpu_pct"]["machine"] for s in samples if "machine" in s.get("cpu_pct", {})]
    if machine:
        mean = sum(machine) / len(machine)
        print(f"  the whole machine: CPU {mean:5.1f}% of {100 * (os.cpu_count() or 1)}%")
    print(
        f"  PostgreSQL client connections {last.get('pg_connections')}, Redis clients "
        f"{last.get('redis_clients')}, database {last.get('db_size_mib', 0):.1f} MiB "
        f"(from {first.get('db_size_mib', 0):.1f}), load average {last.get('load_average')}"
    )
    opened = [s for s in samples if "pg_sessions_opened" in s]
    if len(opened) > 1:
        span = max(opened[-1]["t"] - opened[0]["t"], 1e-6)
        count = opened[-1]["pg_sessions_opened"] - opened[0]["pg_sessions_opened"]
        print(f"  PostgreSQL sessions opened: {count} ({count / span:.1f} a second)")
    queued = max(s.get("queued_executions", 0) for s in samples)
    idle = max(sum(s.get("pg_idle_in_transaction", {}).values()) for s in samples)
    print(f"  at most: {queued} executions queued for a worker, {idle} idle in transaction")
    held: dict[str, int] = {}
    for s in samples:
        for query, count in s.get("pg_idle_in_transaction", {}).items():
            held[query] = max(held.get(query, 0), count)
    for query, count in sorted(held.items(), key=lambda item: -item[1])[:3]:
        print(f"    {count:3} idle in transaction after: {query}")


def print_verdict(profile: str, checks: list[tuple[str, str, bool]], measured: str) -> bool:
    print(f"\n{profile}: plan {PLAN[profile]}; here {measured}")
    print(f"  {'criterion':50} {'measured':34} verdict")
    for criterion, value, passed in checks:
        print(f"  {criterion:50} {value:34} {'PASS' if passed else 'FAIL'}")
    return all(passed for _, _, passed in checks)


def plot(result_path: Path, profile: str) -> list[str]:
    prefix = PLOTS / f"load-{profile}"
    done = subprocess.run(  # noqa: S603 - the load venv's python on our script
        [str(LOAD_VENV / "bin" / "python"), str(PLOTTER), str(result_path), str(prefix)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"plotting failed:\n{done.stderr[-2000:]}")
        return []
    return done.stdout.split()


# -- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    locust = ensure_load_venv()
    profile: str = args.profile
    rate, duration = PROFILES[profile]
    rate = args.rate or rate
    duration = args.duration or duration
    interval = args.sample_interval or (60.0 if duration >= 900 else 10.0)
    warmup = args.warmup if args.warmup is not None else min(600.0, duration / 4)
    workdir = Path(tempfile.mkdtemp(prefix=f"apiary-load-{profile}-"))
    print(f"bringing up the topology in {workdir} ...", flush=True)
    # The fake upstream's own errors (a caller gone mid-reply) go to a file, with times.
    upstream_log = logging.FileHandler(workdir / "upstream.log")
    upstream_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.getLogger("aiohttp").addHandler(upstream_log)
    logging.getLogger("aiohttp").propagate = False
    topology = await Topology.up(
        workdir,
        model_delays={"gpt-4o-mini": UPSTREAM_DELAY_S, "gpt-4o": UPSTREAM_DELAY_S},
        # A soak outlasts the 15-minute access token the dashboard user signs in with.
        extra_env={"APIARY_ACCESS_TOKEN_TTL_S": "86400", **args.env},
    )
    topology.upstream.record_requests = False  # an hour of calls would fill this process
    sampler = Sampler(topology, interval)
    steps: list[Step] = []
    sampling = asyncio.create_task(sampler.run())
    try:
        rates = [r for r in PEAK_STEPS if r >= rate] if profile == "peak" else [rate]
        if args.steps:
            rates = [float(r) for r in args.steps.split(",")]
        seeded = await seed(topology)
        for step_rate in rates:
            print(f"Locust: {step_rate:g} req/s for {duration:g} s ...", flush=True)
            step = await locust_run(
                locust,
                seeded,
                rate=step_rate,
                duration_s=duration,
                workdir=workdir,
                sampler=sampler,
            )
            steps.append(step)
            print_step(step)
            if profile == "peak" and not all(ok for *_, ok in steady_checks(step, PEAK_P95_MS)):
                break
            if profile == "peak":
                await drain(topology)
            if topology.deaths or not all(p.alive() for p in topology.processes.values()):
                print("a process of the topology died; stopping")
                break
        await sampler.sample()
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        logs = {name: p.logs()[-2000:] for name, p in topology.processes.items()}
        await topology.down()

    print_samples(sampler.samples)
    checks: list[tuple[str, str, bool]]
    growth: dict[str, float] = {}
    if profile == "peak":
        passing = [s.rate for s in steps if all(ok for *_, ok in steady_checks(s, PEAK_P95_MS))]
        best = max(passing) if passing else None
        checks = [
            (
                f"{s.rate:g} req/s: p95 < 2 s, 0 failures",
                f"p95 {s.p95_ms:g} ms, {s.failures} failed, {s.achieved:.0f} req/s",
                all(ok for *_, ok in steady_checks(s, PEAK_P95_MS)),
            )
            for s in steps
        ]
        measured = f"highest passing rate {best:g} req/s" if best else "no step passed"
        if best is not None and best == steps[-1].rate:
            measured += " (every step passed: the peak is higher, try higher --steps)"
    else:
        step = steps[0]
        checks = steady_checks(step, STEADY_P95_MS)
        measured = f"{step.rate:g} req/s for {step.duration_s:g} s"
        if profile == "soak":
            # Samples after the load stopped (Locust's figures being read) are not judged.
            until = step.started_at + step.duration_s
            growth, memory = soak_checks(sampler.samples, step.started_at + warmup, until)
            checks += memory
    passed = print_verdict(profile, checks, measured)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    # A run shorter than the profile's is a smoke run: its files must not pass for the real one.
    smoke = args.quick or duration < PROFILES[profile][1]
    result_path = RESULTS / f"load-{profile}{'-smoke' if smoke else ''}-{stamp}.json"
    commit = subprocess.run(  # noqa: ASYNC221, S603 - once, after the run
        [GIT, "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    result = {
        "profile": profile,
        "quick": args.quick,
        "smoke": smoke,
        "commit": commit,
        "plan": PLAN[profile],
        "duration_s": duration,
        "warmup_s": warmup,
        "sample_interval_s": interval,
        "upstream_delay_s": UPSTREAM_DELAY_S,
        "steps": [
            {
                "rate": s.rate,
                "started_at": s.started_at,
                "requests": s.requests,
                "failures": s.failures,
                "achieved_rps": s.achieved,
                "p50_ms": s.p50_ms,
                "p95_ms": s.p95_ms,
                "stats": s.stats,
                "history": s.history,
                "watchers": s.watchers,
            }
            for s in steps
        ],
        "samples": sampler.samples,
        "rss_growth": growth,
        "checks": [{"criterion": c, "measured": m, "passed": ok} for c, m, ok in checks],
        "passed": passed,
        "logs_tail": logs,
    }
    result_path.write_text(json.dumps(result, indent=1))
    print(f"\nresults: {result_path}\nlogs (every process's, Locust's): {workdir}")
    for png in plot(result_path, profile + ("-smoke" if smoke else "")):
        print(f"plot: {png}")
    return 0 if passed else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="steady")
    parser.add_argument("--duration", type=float, help="seconds (per step for peak)")
    parser.add_argument("--rate", type=float, help="req/s (the first step for peak)")
    parser.add_argument("--steps", help="peak: the rates to step through, e.g. 100,200,300")
    parser.add_argument("--sample-interval", type=float, help="seconds (60 for long runs, else 10)")
    parser.add_argument("--warmup", type=float, help="soak: seconds left out of the RSS slope")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument(
        "--judge",
        type=Path,
        metavar="RESULTS_JSON",
        help="print the soak verdicts of a recorded run instead of running one",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set in every process of the topology (a setting to try), repeatable",
    )
    args = parser.parse_args()
    if args.judge is not None:
        sys.exit(judge(args.judge))
    try:
        args.env = dict(item.split("=", 1) for item in args.env)
    except ValueError:
        parser.error("--env takes KEY=VALUE")
    if args.quick:
        args.duration = args.duration or (30.0 if args.profile == "peak" else 60.0)
        args.rate = args.rate or 20.0
        args.sample_interval = args.sample_interval or 5.0
        if args.profile == "peak" and not args.steps:
            args.steps = "20,40"
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
