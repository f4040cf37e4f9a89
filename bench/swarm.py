"""Swarm benchmark: an execution's wall time against its critical path (issue 4).

The fake upstream (bench/fake_upstream_server.py) answers every chat call after a fixed
1 s delay and answers the orchestrator's decomposition with as many subtasks as allowed, so
an execution of N sub-agents has a critical path of 3 s: decompose 1 s + the slowest
sub-agent 1 s + synthesize 1 s. Everything above that is Apiary's overhead.

For each mode, `inprocess` (`apiary serve` on SQLite running executions itself) and `celery`
(PostgreSQL and Redis from scripts/services.sh, `apiary serve` with APIARY_RUNNER=celery and
two `apiary worker --concurrency=5`, one per core; `--workers` and `--worker-args` change
that), it creates an agent per N in 10, 50, 100, runs executions through the
API (`options.max_agents=N`, after a warm-up: one execution in-process, ten at once on
Celery so that every worker process has run one), polls them to their end, and reports the
wall time (the execution's `created_at` to `finished_at`, so queueing counts), the figures it
recorded (`wall_s`, `critical_path_s`) and the overhead against 3 s. Then it starts 10
executions of 100 sub-agents at once and reports errors and each one's wall time.

    .venv/bin/python bench/swarm.py                 # both modes (about 3 minutes)
    .venv/bin/python bench/swarm.py --mode celery   # one mode
    .venv/bin/python bench/swarm.py --quick         # smoke run: in-process, N=10 only

Targets: overhead under 5% at 100 sub-agents (3.15 s), and 10 concurrent 100-agent
executions without errors, each within 1 s of its critical path. The JSON of each run goes
to bench/results/swarm-<date>.json. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import (  # the sibling script
    ADMIN_EMAIL,
    BENCH,
    MODEL,
    RESULTS,
    ROOT,
    UPSTREAM_KEY,
    Service,
    Services,
    clean_env,
    free_port,
    wait_http,
)

DELAY_S = 1.0  # every upstream call
CRITICAL_PATH_S = 3 * DELAY_S  # decompose + slowest sub-agent + synthesize
SIZES = (10, 50, 100)
CONCURRENT = 10  # executions of 100 sub-agents started at once
TARGET_OVERHEAD = 0.05  # at 100 sub-agents
TARGET_CONCURRENT_SLACK_S = 1.0
TERMINAL = {"succeeded", "failed", "cancelled", "budget_exceeded", "timed_out"}
TASK = "Benchmark the swarm: split this into as many parts as you may"
# One `apiary worker` per core, its default threads pool running half the concurrent batch
# on its one event loop: measured against one worker of 10 (less CPU, but one core for all)
# and prefork (one process per execution: the most CPU), it ended the batch soonest.
WORKERS = 2
WORKER_ARGS = f"--concurrency={CONCURRENT // WORKERS}"
SERVICES_SH = ROOT / "scripts" / "services.sh"
BIN = Path(sys.executable).parent  # the venv this script runs in (usually .venv)


# -- processes --------------------------------------------------------------------------------


def start(
    services: Services, name: str, argv: Sequence[str], env: dict[str, str], log: Path
) -> Service:
    """Like `Services.start`, without pinning: the swarm uses both cores."""
    handle = log.open("wb")
    popen = subprocess.Popen(  # noqa: S603 - argv built here from fixed paths
        list(argv),
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ROOT,
    )
    handle.close()
    service = Service(name, popen, log)
    services.started.append(service)
    return service


def start_upstream(services: Services, workdir: Path) -> str:
    log = workdir / "upstream.log"
    argv = [
        str(BIN / "python"),
        str(BENCH / "fake_upstream_server.py"),
        "--delay",
        str(DELAY_S),
        "--subtasks",
        "0",
    ]
    service = start(services, "fake upstream", argv, clean_env(PYTHONUNBUFFERED="1"), log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("PORT "):
                return f"http://127.0.0.1:{int(line.split()[1])}"
        if not service.alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"the fake upstream did not start:\n{service.log_tail()}")


def start_databases(workdir: Path) -> tuple[Path, dict[str, str]]:
    """Throwaway PostgreSQL and Redis (scripts/services.sh); their URLs."""
    directory = workdir / "services"
    subprocess.run(  # noqa: S603 - the project's own script
        [str(SERVICES_SH), "start", str(directory)], cwd=ROOT, check=True, capture_output=True
    )
    urls = {}
    for line in (directory / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        urls[key.strip()] = value.strip()
    return directory, {
        "APIARY_DATABASE_URL": urls["APIARY_TEST_DATABASE_URL"],
        "APIARY_REDIS_URL": urls["APIARY_TEST_REDIS_URL"],
    }


def stop_databases(directory: Path) -> None:
    subprocess.run(  # noqa: S603 - the project's own script
        [str(SERVICES_SH), "stop", str(directory)], cwd=ROOT, check=False, capture_output=True
    )


def _apiary(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - the project's own CLI
        [str(BIN / "apiary"), *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"apiary {' '.join(args[:2])} failed:\n{done.stderr.strip()}")
    return done.stdout


def start_apiary(
    services: Services,
    workdir: Path,
    upstream_url: str,
    mode: str,
    extra: dict[str, str],
    worker_args: Sequence[str],
    workers: int,
) -> tuple[str, str]:
    """A data dir, config, tenant and developer key, `apiary serve` (and a worker); the
    API's base URL and the key."""
    home = workdir / f"apiary-{mode}"
    home.mkdir()
    config = home / "apiary.yaml"
    # No `max_concurrency` on the provider: the gateway does not queue the 1000 calls.
    config.write_text(
        "providers:\n"
        "  - name: fake\n"
        "    kind: openai\n"
        f"    base_url: {upstream_url}/v1\n"
        f"    api_key: {UPSTREAM_KEY}\n"
        f"    models: [{MODEL}]\n"
    )
    port = free_port()
    env = clean_env(
        APIARY_DATA_DIR=str(home / "data"),
        APIARY_CONFIG=str(config),
        APIARY_HOST="127.0.0.1",
        APIARY_PORT=str(port),
        APIARY_LOG_LEVEL="WARNING",
        APIARY_RUNNER=mode,
        # Sub-agents in flight per tenant and process: 10 executions of 100 at once.
        APIARY_SWARM__TENANT_CONCURRENCY="1000",
        **extra,
    )
    _apiary(env, "migrate")
    _apiary(
        env,
        "admin",
        "create-tenant",
        "bench",
        "--plan",
        "enterprise",  # unlimited: a benchmark measures Apiary, not a plan's rates
        "--admin-email",
        ADMIN_EMAIL,
        "--admin-password",
        "bench-" + os.urandom(12).hex(),
    )
    key = json.loads(
        _apiary(env, "admin", "create-api-key", "--tenant", "bench", "--role", "developer")
    )["key"]
    apiary = str(BIN / "apiary")
    server = start(services, f"apiary serve ({mode})", [apiary, "serve"], env, home / "serve.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(server, f"{base}/healthz", timeout_s=60)
    if mode == "celery":
        argv = [apiary, "worker", *worker_args]
        # INFO for the workers: Celery's "ready" line, which this waits for, is an INFO
        # record, and `apiary worker` logs at APIARY_LOG_LEVEL (WARNING for the server).
        worker_env = {**env, "APIARY_LOG_LEVEL": "INFO"}
        started = [
            start(services, "apiary worker", argv, worker_env, home / f"worker-{i}.log")
            for i in range(workers)
        ]
        deadline = time.monotonic() + 90
        for worker in started:
            while "ready" not in worker.log.read_text(errors="replace"):
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start:\n{worker.log_tail()}")
                time.sleep(0.2)
    return base, key


# -- measurement ------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: Sequence[int]) -> float:
    """User + system CPU of these processes and all their descendants (Linux /proc).

    Wall time depends on whatever else the machine runs; the CPU Apiary's processes spend
    on an execution does not, so it is the figure to compare between commits."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    wanted = set(roots)
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        wanted |= more
        grew = bool(more)
    return sum(times.get(pid, 0.0) for pid in wanted)


@dataclass
class Run:
    mode: str
    n: int
    batch: str  # "single" or "concurrent"
    state: str = "error"
    error: str | None = None
    subagents_ok: int = 0
    client_s: float = 0.0  # POST sent to the `done` event received
    total_s: float = 0.0  # the execution's created_at to finished_at
    queued_s: float = 0.0  # created_at to started_at
    wall_s: float = 0.0  # recorded: started_at to finished_at
    critical_path_s: float = 0.0  # recorded: decompose + slowest sub-agent + synthesize
    decompose_s: float = 0.0
    subagents_s: float = 0.0
    synthesize_s: float = 0.0
    cpu_s: float = 0.0  # Apiary's processes, POST to the end (for a batch: the whole batch)
    timeline: list[tuple[str, str]] = field(default_factory=list)  # (event type, created_at)

    @property
    def overhead(self) -> float:
        return self.total_s / CRITICAL_PATH_S - 1


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


async def create_agent(session: aiohttp.ClientSession, base: str, n: int) -> str:
    body = {"name": f"bench-{n}-{os.urandom(3).hex()}", "model": MODEL, "max_subagents": n}
    async with session.post(f"{base}/api/v1/agents", json=body) as response:
        if response.status >= 300:
            raise RuntimeError(f"creating an agent: HTTP {response.status} {await response.text()}")
        agent_id: str = (await response.json())["id"]
        return agent_id


async def execute(
    session: aiohttp.ClientSession,
    base: str,
    agent_id: str,
    run: Run,
    *,
    timeout_s: float = 120,
) -> Run:
    body = {"agent_id": agent_id, "task": TASK, "options": {"max_agents": run.n}}
    started = time.perf_counter()
    try:
        async with session.post(f"{base}/api/v1/executions", json=body) as response:
            if response.status >= 300:
                run.error = f"POST: HTTP {response.status} {(await response.text())[:200]}"
                return run
            execution_id = (await response.json())["id"]
        # Watch it as the dashboard does, on its event stream, to the `done` event; then
        # read the finished execution once. (Polling its 100 subtasks every 0.1 s would
        # cost the server more CPU than some of what is measured.)
        events = f"{base}/api/v1/executions/{execution_id}/events"
        async with session.get(events, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status != 200:
                run.error = f"events: HTTP {response.status} {(await response.text())[:200]}"
                return run
            async for line in response.content:
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    run.timeline.append((event["type"], event["created_at"]))
                if line.startswith(b"event: done"):
                    break
        async with session.get(f"{base}/api/v1/executions/{execution_id}") as response:
            detail: dict[str, Any] = await response.json()
        if detail["state"] not in TERMINAL:
            run.error = f"the event stream ended in state {detail.get('state')}"
            return run
    except (aiohttp.ClientError, TimeoutError) as error:
        run.error = f"{type(error).__name__}: {error}"
        return run
    run.client_s = time.perf_counter() - started
    run.state = detail["state"]
    run.subagents_ok = sum(1 for s in detail["subtasks"] if s["status"] == "succeeded")
    run.total_s = _seconds(detail["created_at"], detail["finished_at"])
    run.queued_s = _seconds(detail["created_at"], detail["started_at"])
    figures = detail.get("figures") or {}
    phases = figures.get("phases") or {}
    run.wall_s = float(figures.get("wall_s") or 0.0)
    run.critical_path_s = float(figures.get("critical_path_s") or 0.0)
    run.decompose_s = float((phases.get("decompose") or {}).get("seconds") or 0.0)
    run.subagents_s = float((phases.get("subagents") or {}).get("seconds") or 0.0)
    run.synthesize_s = float((phases.get("synthesize") or {}).get("seconds") or 0.0)
    if run.state != "succeeded":
        run.error = f"ended {run.state}: {detail.get('error')}"
    elif run.subagents_ok != run.n:
        run.error = f"{run.n - run.subagents_ok} of {run.n} sub-agents did not succeed"
    return run


async def measure(
    base: str,
    key: str,
    mode: str,
    sizes: Sequence[int],
    repeats: int,
    concurrent: int,
    pids: Sequence[int],
) -> list[Run]:
    headers = {"authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    runs: list[Run] = []
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        agents = {n: await create_agent(session, base, n) for n in {*sizes, 100, 10}}
        # Warm every process that will run an execution: a Celery worker's processes each
        # pay once for their first (database connections and prepared statements, compiled
        # SQL), which is start-up, not overhead; the in-process server has one process.
        warm_ups = CONCURRENT if mode == "celery" else 1
        warm = await asyncio.gather(
            *(execute(session, base, agents[10], Run(mode, 10, "warm-up")) for _ in range(warm_ups))
        )
        print(
            f"  warm-up: {warm_ups} x N=10 at once: "
            + ", ".join(f"{run.state} in {run.total_s:.2f}s {run.error or ''}" for run in warm),
            flush=True,
        )
        for n in sizes:
            for _ in range(repeats):
                cpu = cpu_seconds(pids)
                run = await execute(session, base, agents[n], Run(mode, n, "single"))
                run.cpu_s = cpu_seconds(pids) - cpu
                print(f"  {_row(run)}", flush=True)
                print(f"    timeline: {timeline(run)}", flush=True)
                runs.append(run)
        if concurrent:
            cpu = cpu_seconds(pids)
            batch = await asyncio.gather(
                *(
                    execute(session, base, agents[100], Run(mode, 100, "concurrent"))
                    for _ in range(concurrent)
                )
            )
            spent = cpu_seconds(pids) - cpu
            for run in batch:
                run.cpu_s = spent
                print(f"  {_row(run)}", flush=True)
            runs.extend(batch)
    return runs


# -- report -----------------------------------------------------------------------------------


def timeline(run: Run) -> str:
    """When the execution's milestones happened, in seconds after its first event: where
    the time between the phases goes."""
    if not run.timeline:
        return ""
    start = dt.datetime.fromisoformat(run.timeline[0][1])
    marks: dict[str, float] = {}
    for kind, when in run.timeline:
        offset = (dt.datetime.fromisoformat(when) - start).total_seconds()
        if kind == "state":
            kind = f"state#{sum(1 for k in marks if k.startswith('state#'))}"
        if kind in ("subagent_started", "subagent_finished"):
            marks.setdefault(f"first {kind}", offset)
            marks[f"last {kind}"] = offset
        else:
            marks.setdefault(kind, offset)
    return ", ".join(f"{kind} {offset:.3f}" for kind, offset in marks.items())


HEADER = (
    f"{'mode':<9} {'batch':<10} {'N':>4} {'total s':>8} {'overhead':>9} {'queued':>7} "
    f"{'wall_s':>7} {'crit s':>7} {'decomp':>7} {'subag':>7} {'synth':>7} {'client s':>8} "
    f"{'cpu s':>7}  state"
)


def _row(run: Run) -> str:
    return (
        f"{run.mode:<9} {run.batch:<10} {run.n:>4} {run.total_s:>8.3f} {run.overhead:>+8.1%} "
        f"{run.queued_s:>7.3f} {run.wall_s:>7.3f} {run.critical_path_s:>7.3f} "
        f"{run.decompose_s:>7.3f} {run.subagents_s:>7.3f} {run.synthesize_s:>7.3f} "
        f"{run.client_s:>8.3f} {run.cpu_s:>7.2f}  {run.state}{' ' + run.error if run.error else ''}"
    )


def verdicts(runs: list[Run], mode: str) -> list[str]:
    lines = []
    hundred = [r.total_s for r in runs if r.mode == mode and r.batch == "single" and r.n == 100]
    if hundred:
        median = statistics.median(hundred)
        ok = median <= CRITICAL_PATH_S * (1 + TARGET_OVERHEAD)
        cpu = statistics.median(
            r.cpu_s for r in runs if r.mode == mode and r.batch == "single" and r.n == 100
        )
        lines.append(
            f"{mode}: 100 sub-agents, Apiary's CPU {cpu:.2f}s per execution "
            f"= {cpu * 10:.1f} ms per sub-agent (median)"
        )
        lines.append(
            f"{mode}: 100 sub-agents, median {median:.3f}s = {median / CRITICAL_PATH_S - 1:+.1%}"
            f" vs {CRITICAL_PATH_S:.0f}s (target < {TARGET_OVERHEAD:.0%}, "
            f"{CRITICAL_PATH_S * (1 + TARGET_OVERHEAD):.2f}s): {'met' if ok else 'MISSED'}"
        )
    batch = [r for r in runs if r.mode == mode and r.batch == "concurrent"]
    if batch:
        errors = sum(1 for r in batch if r.error)
        worst = max(r.total_s for r in batch)
        worst_own = max(r.total_s - r.critical_path_s for r in batch)
        ok = errors == 0 and worst <= CRITICAL_PATH_S + TARGET_CONCURRENT_SLACK_S
        lines.append(
            f"{mode}: {len(batch)} concurrent x 100 sub-agents, {errors} errors, slowest "
            f"{worst:.3f}s (target <= {CRITICAL_PATH_S + TARGET_CONCURRENT_SLACK_S:.0f}s, "
            f"no errors): {'met' if ok else 'MISSED'}; largest total - recorded critical "
            f"path {worst_own:.3f}s"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("inprocess", "celery", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per N (the median counts)")
    parser.add_argument("--quick", action="store_true", help="in-process, N=10, once")
    parser.add_argument(
        "--sizes", type=lambda text: [int(n) for n in text.split(",")], default=list(SIZES)
    )
    parser.add_argument(
        "--concurrent", type=int, default=CONCURRENT, help="100-agent executions at once"
    )
    parser.add_argument(
        "--worker-args",
        default=WORKER_ARGS,
        help=f"options for `apiary worker` (celery mode; default {WORKER_ARGS!r})",
    )
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help="`apiary worker` processes (celery mode)"
    )
    args = parser.parse_args()
    modes = ["inprocess", "celery"] if args.mode == "both" else [args.mode]
    sizes: Sequence[int] = args.sizes
    repeats, concurrent = args.repeats, args.concurrent
    if args.quick:
        modes, sizes, repeats, concurrent = ["inprocess"], (10,), 1, 0

    load_before = os.getloadavg()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="apiary-bench-swarm-") as tmp:
        workdir = Path(tmp)
        for mode in modes:
            services = Services()
            databases: Path | None = None
            try:
                upstream = start_upstream(services, workdir)
                extra: dict[str, str] = {}
                if mode == "celery":
                    databases, extra = start_databases(workdir)
                worker_args = args.worker_args.split()
                base, key = start_apiary(
                    services, workdir, upstream, mode, extra, worker_args, args.workers
                )
                print(f"{mode}: serving at {base}", flush=True)
                pids = [s.popen.pid for s in services.started if s.name.startswith("apiary")]
                runs += asyncio.run(measure(base, key, mode, sizes, repeats, concurrent, pids))
            finally:
                services.stop_all()
                if databases is not None:
                    stop_databases(databases)

    print()
    print(HEADER)
    for run in runs:
        print(_row(run))
    print()
    summary = [line for mode in modes for line in verdicts(runs, mode)]
    for line in summary:
        print(line)
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{os.cpu_count()} CPUs"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"swarm-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_before": load_before,
                "load_after": load_after,
                "delay_s": DELAY_S,
                "runs": [asdict(r) | {"overhead": r.overhead} for r in runs],
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
