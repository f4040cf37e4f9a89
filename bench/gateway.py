"""Gateway benchmark: Apiary's /v1/chat/completions against LiteLLM's proxy, side by side.

One run starts a fake OpenAI upstream (tests/fakes/upstream.py) in its own process, then
measures, against that same upstream and at concurrency 1, 10 and 50, non-streaming and
streaming: the upstream called directly (the baseline), Apiary served by `apiary serve`
(one uvicorn worker, API-key auth, ledger, metrics and logs on, SQLite data dir), and
LiteLLM's proxy (its own venv under bench/.litellm-venv, created on first use). The
gateways run on CPU 1 (`taskset -c 1`); the upstream and this load generator share CPU 0.
Mode `responses` sends the same request to Apiary's `/v1/responses` (stored, the default),
to be compared with its chat figure in the same run (issue 18: at least 80% at c=10).

    .venv/bin/python bench/gateway.py            # the full run (about 6 minutes)
    .venv/bin/python bench/gateway.py --quick    # a smoke run (about 2 minutes)
    .venv/bin/python bench/gateway.py --skip-litellm --ref . --ref main   # two builds

Several Apiary servers (log levels, builds named by `--ref`) are started together and
measured in turn within each cell, so load from elsewhere on the machine falls on all of
them alike and their figures can be compared within the run. `--modes`, `--concurrencies`
and `--repeat N` narrow a run to the cells in question and measure each N times (each
figure is then the median), e.g. for the added latency at c=1:

    .venv/bin/python bench/gateway.py --skip-litellm --log-levels INFO --modes json \
        --concurrencies 1,10 --repeat 5 --duration 6 --warmup 2 --ref . --ref main

`--production` also measures every build as a deployment runs it (issue 16): the data in
a PostgreSQL and the counters, cache and key revocations in a Redis, both of its own
(scripts/services.sh, on the load generator's core), beside the same build on its
embedded defaults, in turn within each cell:

    .venv/bin/python bench/gateway.py --production --log-levels INFO

`--tracing` also measures every build with OpenTelemetry tracing on (issue 17): exporting
over OTLP/HTTP to a local receiver (bench/otlp_sink.py, on the load generator's core) at
`--tracing-ratio` (default 0.1), beside the same build with tracing off, in turn within each
cell, and prints traced/untraced requests/s against the target of 0.95 at json c=10:

    .venv/bin/python bench/gateway.py --skip-litellm --tracing --log-levels INFO \
        --modes json --concurrencies 10 --repeat 3

Two server processes of one build differ by more than that 5% (docs/benchmarks.md), so
`--tracing-alternate SECONDS` also measures tracing's cost inside the traced server
itself: tracing switched off and on in turn every SECONDS (bench/alternate/), and the CPU
a request takes in each, paired phase by phase (mean difference and its standard error).
The traced server's own rows then mix both phases: its req/s share above is not the
figure in such a run, the in-process share is.

It prints a table, the Apiary/LiteLLM ratios against the targets of issue 3 (and with
`--production`, production against embedded against issue 16's targets), and writes
everything to bench/results/gateway-<date>.json. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV = ROOT / ".venv"
LITELLM_VENV = BENCH / ".litellm-venv"
SERVICES_SH = ROOT / "scripts" / "services.sh"

# Absolute paths: the scripts run only what they name, never something earlier in PATH.
TASKSET = shutil.which("taskset") or "/usr/bin/taskset"
GIT = shutil.which("git") or "/usr/bin/git"
TAR = shutil.which("tar") or "/usr/bin/tar"

LOADGEN_CPU = 0  # the load generator (this process) and the fake upstream
GATEWAY_CPU = 1  # the gateway under test, alone on its core
CONCURRENCIES = (1, 10, 50)
# "responses": the same call through the Responses API (`POST /v1/responses`, stored as by
# default), measured on Apiary only; the direct upstream's baseline for it is the chat call.
MODES = ("json", "stream", "responses")

UPSTREAM_KEY = "sk-fake-upstream"  # tests/fakes/upstream.py DEFAULT_API_KEY
MODEL = "gpt-4o-mini"
ADMIN_EMAIL = "bench@apiary.local"
# Budget and rate limits for the benchmark tenant: on, so they are enforced, but far above
# what a run can reach, so they never refuse a request.
BENCH_LIMITS = {
    "monthly_budget_usd": 1_000_000_000,
    "key_rpm": 1_000_000_000,
    "tenant_rpm": 1_000_000_000,
    "key_tpm": 1_000_000_000,
    "tenant_tpm": 1_000_000_000,
}
PROMPT = "Say hello to the benchmark"  # the fake echoes it: 7 content chunks when streaming

# Targets of issue 3 ("Tests and benchmark").
TARGET_RPS_RATIO_JSON = 20.0
TARGET_RPS_RATIO_STREAM = 10.0
TARGET_ADDED_P50_MS = 1.0
TARGET_PEAK_RSS_MIB = 150.0
# Issue 18: /v1/responses keeps this share of /v1/chat/completions' req/s at c=10.
TARGET_RESPONSES_RPS_SHARE = 0.8
# Targets of issue 16 for production mode (PostgreSQL + Redis) against embedded.
TARGET_PRODUCTION_RPS_SHARE = 0.85  # of the embedded mode's req/s, json at c=10
TARGET_TRACING_RPS_SHARE = 0.95  # of the same build untraced, json at c=10 (issue 17)
TARGET_PRODUCTION_ADDED_P50_MS = 1.0
# Issue 18: the Anthropic Messages API (`--messages`) against chat, same build, same run.
TARGET_MESSAGES_RPS_SHARE = 0.8  # of /v1/chat/completions' req/s at c=10

WORKTREE = "."  # `--ref .`: the working tree, as without --ref


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _core_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]  # idle + iowait
            return sum(values[:8]) - idle, sum(values[:8])
    return 0, 0


@dataclass
class Service:
    """A process this benchmark started, in its own process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def peak_rss_mib(self) -> float:
        """VmHWM of the process, plus its children's if it has any (workers)."""
        return sum(_status_kib(pid, "VmHWM") for pid in _tree(self.pid)) / 1024

    def rss_mib(self) -> float:
        return sum(_status_kib(pid, "VmRSS") for pid in _tree(self.pid)) / 1024

    def cpu_s(self) -> float:
        return sum(_cpu_s(pid) for pid in _tree(self.pid))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


class Services:
    """Every process started, stopped in reverse order however the run ends."""

    def __init__(self) -> None:
        self.started: list[Service] = []

    def start(
        self, name: str, argv: Sequence[str], *, cpu: int, env: dict[str, str], log: Path
    ) -> Service:
        handle = log.open("wb")
        popen = subprocess.Popen(  # noqa: S603 - argv built here from fixed paths
            [TASKSET, "-c", str(cpu), *argv],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as one
            cwd=ROOT,
        )
        handle.close()
        service = Service(name, popen, log)
        self.started.append(service)
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self.started:
            self.started.remove(service)

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


class Backends:
    """PostgreSQL and Redis of the run's own (scripts/services.sh), for production mode.

    Started from this process, so they inherit its core (the load generator's): the
    gateway's core measures the gateway alone, as it would run beside its databases on
    other machines. Each Apiary server gets a database and a Redis database number of its
    own, so builds and runs never see each other's tenants, counters or cache."""

    def __init__(self, workdir: Path) -> None:
        self.directory = workdir / "backends"
        subprocess.run(  # noqa: S603 - the project's own script
            [str(SERVICES_SH), "start", str(self.directory)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        urls = dict(
            line.split("=", 1) for line in (self.directory / "env").read_text().splitlines()
        )
        self.database_url = urls["APIARY_TEST_DATABASE_URL"].strip()
        self.redis_url = urls["APIARY_TEST_REDIS_URL"].strip()
        self._made = 0

    def new(self) -> dict[str, str]:
        """A fresh database and Redis database for one Apiary server: its environment."""
        self._made += 1
        if self._made > 15:
            raise RuntimeError("more production-mode servers than Redis has databases")
        name = f"bench_{self._made}"
        asyncio.run(_create_database(self.database_url, name))
        return {
            "APIARY_DATABASE_URL": self.database_url.rsplit("/", 1)[0] + f"/{name}",
            "APIARY_REDIS_URL": self.redis_url.rsplit("/", 1)[0] + f"/{self._made}",
        }

    def stop(self) -> None:
        subprocess.run(  # noqa: S603 - the project's own script
            [str(SERVICES_SH), "stop", str(self.directory)],
            cwd=ROOT,
            check=False,
            capture_output=True,
        )


async def _create_database(url: str, name: str) -> None:
    import asyncpg  # Apiary's own driver, in its venv

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def wait_http(service: Service, url: str, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited early:\n{service.log_tail()}")
        try:
            # http://127.0.0.1 URLs this script built
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{service.name} not ready after {timeout_s:.0f}s:\n{service.log_tail()}")


def clean_env(source: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment without anything that could point a service elsewhere.

    `source`: a snapshot of the tree (see `export_ref`) imported before the working tree;
    None: this working tree itself, also when .venv's editable install is another checkout's
    (a `git worktree` sharing the main checkout's venv).
    """
    dropped = ("APIARY_", "LITELLM_", "OPENAI_", "DATABASE_URL", "REDIS_URL", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PYTHONPATH"] = str(source if source is not None else ROOT)
    env.update(extra)
    return env


def export_ref(ref: str, workdir: Path, *, name: str = "source") -> tuple[Path, str]:
    """`git archive` of `ref` into `workdir / name`: the tree to run, unaffected by edits in
    progress."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    if not commit:
        raise SystemExit(f"--ref {ref}: not a commit")
    target = workdir / name
    target.mkdir()
    archive = subprocess.run(  # noqa: S603 - fixed git command
        [GIT, "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(  # noqa: S603 - fixed tar command
        [TAR, "-x", "-C", str(target)], input=archive.stdout, check=True
    )
    return target, commit


def _start_announcer(
    services: Services, log: Path, name: str, script: str, *, source: Path | None = None
) -> tuple[Service, str]:
    """Start a bench helper server (bench/`script`) that prints `PORT n` once listening;
    returns it and its URL."""
    service = services.start(
        name,
        [str(VENV / "bin" / "python"), str(BENCH / script)],
        cpu=LOADGEN_CPU,
        env=clean_env(source, PYTHONUNBUFFERED="1"),
        log=log,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("PORT "):
                return service, f"http://127.0.0.1:{int(line.split()[1])}"
        if not service.alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"the {name} did not start:\n{service.log_tail()}")


def start_upstream(
    services: Services, workdir: Path, *, source: Path | None = None
) -> tuple[Service, str]:
    log = workdir / "upstream.log"
    script = "fake_upstream_server.py"
    return _start_announcer(services, log, "fake upstream", script, source=source)


def start_otlp_sink(services: Services, workdir: Path) -> tuple[Service, str]:
    return _start_announcer(services, workdir / "otlp-sink.log", "OTLP sink", "otlp_sink.py")


# -- Apiary -------------------------------------------------------------------------------------


def _apiary(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - the project's own CLI
        [str(VENV / "bin" / "apiary"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"apiary {' '.join(args[:2])} failed:\n{done.stderr.strip()}")
    return done.stdout


def start_apiary(
    services: Services,
    workdir: Path,
    upstream_url: str,
    *,
    log_level: str,
    source: Path | None = None,
    name: str = "",
    backends: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[Service, str, str, str]:
    """A fresh data dir and config, a tenant and a developer key, then `apiary serve`;
    last, the tenant's budget and rate limits are switched on (see `enable_limits`).
    `name` tells apart the data dirs of several Apiary builds started in one run;
    `backends` (APIARY_DATABASE_URL, APIARY_REDIS_URL) runs it as production does."""
    home = workdir / f"apiary{name}-{log_level.lower()}"
    home.mkdir()
    config = home / "apiary.yaml"
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
        source,
        APIARY_DATA_DIR=str(home / "data"),
        APIARY_CONFIG=str(config),
        APIARY_HOST="127.0.0.1",
        APIARY_PORT=str(port),
        APIARY_LOG_LEVEL=log_level,
        **(backends or {}),
        **(extra_env or {}),
    )
    _apiary(env, "migrate")
    admin_password = secrets.token_urlsafe(18)
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
        admin_password,
    )
    key = json.loads(
        _apiary(env, "admin", "create-api-key", "--tenant", "bench", "--role", "developer")
    )["key"]
    service = services.start(
        f"apiary ({log_level})",
        [str(VENV / "bin" / "apiary"), "serve"],
        cpu=GATEWAY_CPU,
        env=env,
        log=home / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(service, f"{base}/healthz", timeout_s=60)
    limits = enable_limits(base, ADMIN_EMAIL, admin_password)
    return service, f"{base}/v1/chat/completions", key, limits


def start_floor(
    services: Services, workdir: Path, upstream_url: str, *, source: Path | None = None
) -> tuple[Service, str]:
    """bench/passthrough_server.py: the same server stack and upstream client as Apiary,
    with none of the gateway's work; what one more hop through Python costs here."""
    port = free_port()
    service = services.start(
        "floor (pass-through)",
        [
            str(VENV / "bin" / "python"),
            str(BENCH / "passthrough_server.py"),
            f"--upstream={upstream_url}",
            f"--key={UPSTREAM_KEY}",
            f"--port={port}",
        ],
        cpu=GATEWAY_CPU,
        env=clean_env(source),
        log=workdir / "floor.log",
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(service, f"{base}/healthz", timeout_s=60)
    return service, f"{base}/v1/chat/completions"


def _call(method: str, url: str, body: object, token: str | None = None) -> Any:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 URLs built here
        url, data=json.dumps(body).encode(), headers=headers, method=method
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def enable_limits(base: str, email: str, password: str) -> str:
    """Switch the tenant's budget and rate limits on, set so high that none refuses.

    With no limits set the enforcer returns early; with these, every call is counted
    against the per-key and per-tenant windows and reserves and settles its cost.
    """
    try:
        token = _call("POST", f"{base}/api/v1/auth/login", {"email": email, "password": password})
        _call("PATCH", f"{base}/api/v1/limits", BENCH_LIMITS, token["access_token"])
    except urllib.error.HTTPError as error:
        if error.code in (404, 405):
            return "off (this build has no /api/v1/limits)"
        raise RuntimeError(f"could not set the tenant's limits: HTTP {error.code}") from None
    return "on: " + ", ".join(f"{k}={v:g}" for k, v in BENCH_LIMITS.items())


# -- LiteLLM ------------------------------------------------------------------------------------


def ensure_litellm(*, timeout_s: float = 1800) -> tuple[Path | None, str]:
    """The LiteLLM proxy's venv, created on first use; (None, why) if that fails.

    It is made on the interpreter Apiary's venv runs on (this script's base Python), and
    made again when that changes: both proxies run on the same Python build, so neither
    gains from a faster interpreter (see `bench/interpreters.py`)."""
    binary = LITELLM_VENV / "bin" / "litellm"
    python = str(Path(sys.executable).resolve())  # a venv's python links to its base's
    if binary.exists() and str((LITELLM_VENV / "bin" / "python").resolve()) != python:
        print(f"{LITELLM_VENV.relative_to(ROOT)} is on another Python: making it again")
        shutil.rmtree(LITELLM_VENV)
    if not binary.exists():
        print(f"installing LiteLLM's proxy into {LITELLM_VENV.relative_to(ROOT)} ...", flush=True)
        uv = str(ROOT / ".tools" / "bin" / "uv")  # `make venv` installs it
        steps = [
            [uv, "venv", "--quiet", "--python", python, str(LITELLM_VENV)],
            [uv, "pip", "install", "--quiet", "--python", str(LITELLM_VENV), "litellm[proxy]"],
        ]
        deadline = time.monotonic() + timeout_s
        for step in steps:
            try:
                done = subprocess.run(  # noqa: S603 - fixed commands
                    step,
                    capture_output=True,
                    text=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                return None, f"{' '.join(step[:3])}: {error}"
            if done.returncode != 0:
                return None, f"{' '.join(step[:3])} failed: {done.stderr.strip()[-800:]}"
        if not binary.exists():
            return None, "uv pip install finished but bench/.litellm-venv/bin/litellm is missing"
    version = subprocess.run(  # noqa: S603 - fixed command
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m;print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    return binary, version or "unknown"


def start_litellm(
    services: Services, workdir: Path, upstream_url: str, binary: Path
) -> tuple[Service, str, str]:
    home = workdir / "litellm"
    home.mkdir()
    master_key = "sk-bench-" + secrets.token_hex(16)  # not a documented default
    config = home / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream_url}/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    port = free_port()
    env = clean_env(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list from GitHub
        HOME=str(home),  # keeps any cache files it writes inside the temp dir
    )
    service = services.start(
        "litellm proxy",
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        cpu=GATEWAY_CPU,
        env=env,
        log=home / "proxy.log",
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(service, f"{base}/health/liveliness", timeout_s=240)
    return service, f"{base}/v1/chat/completions", master_key


# -- load generator -----------------------------------------------------------------------------


@dataclass
class Cell:
    """One (target, mode, concurrency) measurement."""

    target: str
    mode: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    ttfb_p50_ms: float | None = None  # streaming: time to the first body bytes
    added_p50_ms: float | None = None
    added_p95_ms: float | None = None
    added_p99_ms: float | None = None
    gateway_cpu_pct: float | None = None  # of one core
    gateway_cpu_us_per_request: float | None = None
    gateway_rss_after_mib: float | None = None  # VmRSS once the cell is done
    loadgen_core_pct: float | None = None  # this process + the upstream, of one core
    # Busy time on each core that came from processes outside this benchmark: the noise.
    others_on_gateway_core_pct: float | None = None
    others_on_loadgen_core_pct: float | None = None


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def responses_body() -> bytes:
    """The Responses API's form of `request_body(stream=False)`."""
    body = {"model": MODEL, "input": PROMPT, "max_output_tokens": 16}
    return json.dumps(body).encode()


async def _load(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    *,
    stream: bool,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> tuple[list[float], list[float], int, str | None, float]:
    """Closed-loop load: `concurrency` workers, each sending its next request on a reply."""
    body = responses_body() if url.endswith("/v1/responses") else request_body(stream)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors = 0
    first_error: str | None = None
    started = time.perf_counter()
    deadline = started + duration_s
    issued = 0

    async def worker() -> None:
        nonlocal errors, first_error, issued
        while time.perf_counter() < deadline and issued < max_requests:
            issued += 1
            t0 = time.perf_counter()
            ttfb = 0.0
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    if stream:
                        tail = await response.content.readany()
                        ttfb = time.perf_counter() - t0
                        while chunk := await response.content.readany():
                            tail = (tail + chunk)[-64:]
                        # OpenAI's stream ends with [DONE], Anthropic's with message_stop.
                        ok = response.status == 200 and (
                            b"[DONE]" in tail or b"message_stop" in tail
                        )
                    else:
                        tail = await response.read()
                        ok = response.status == 200 and tail.startswith(b"{")
                elapsed = time.perf_counter() - t0
            except (aiohttp.ClientError, TimeoutError) as error:
                ok, tail = False, f"{type(error).__name__}: {error}".encode()
            if ok:
                latencies.append(elapsed)
                if stream:
                    ttfbs.append(ttfb)
            else:
                errors += 1
                if first_error is None:
                    first_error = tail[:300].decode(errors="replace")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, ttfbs, errors, first_error, time.perf_counter() - started


async def _measure(
    target: str,
    url: str,
    key: str,
    *,
    mode: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    gateway: Service | None,
    upstream: Service,
) -> Cell:
    stream = mode == "stream"
    # One pooled connection per worker, kept alive across the warm-up and the measurement.
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _load(
            session,
            url,
            key,
            stream=stream,
            concurrency=concurrency,
            duration_s=warmup_s,
            max_requests=max_requests,
        )
        gateway_cpu0 = gateway.cpu_s() if gateway else 0.0
        ticks0 = (_core_ticks(GATEWAY_CPU), _core_ticks(LOADGEN_CPU))
        core0 = os.times()
        upstream_cpu0 = upstream.cpu_s()
        latencies, ttfbs, errors, first_error, elapsed = await _load(
            session,
            url,
            key,
            stream=stream,
            concurrency=concurrency,
            duration_s=duration_s,
            max_requests=max_requests,
        )
        core1 = os.times()
        ticks1 = (_core_ticks(GATEWAY_CPU), _core_ticks(LOADGEN_CPU))
        loadgen_cpu = (core1.user - core0.user) + (core1.system - core0.system)
        loadgen_cpu += upstream.cpu_s() - upstream_cpu0
        gateway_cpu = (gateway.cpu_s() - gateway_cpu0) if gateway else 0.0
    hz = os.sysconf("SC_CLK_TCK")
    busy_gateway_core = (ticks1[0][0] - ticks0[0][0]) / hz
    busy_loadgen_core = (ticks1[1][0] - ticks0[1][0]) / hz
    latencies.sort()
    ttfbs.sort()
    cell = Cell(
        target=target,
        mode=mode,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        first_error=first_error,
        elapsed_s=round(elapsed, 3),
        rps=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 3),
        p95_ms=round(percentile(latencies, 0.95) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
        ttfb_p50_ms=round(percentile(ttfbs, 0.50) * 1000, 3) if stream else None,
        loadgen_core_pct=round(100 * loadgen_cpu / elapsed, 1),
        others_on_gateway_core_pct=round(
            max(0.0, 100 * (busy_gateway_core - gateway_cpu) / elapsed), 1
        ),
        others_on_loadgen_core_pct=round(
            max(0.0, 100 * (busy_loadgen_core - loadgen_cpu) / elapsed), 1
        ),
    )
    if gateway is not None:
        cell.gateway_cpu_pct = round(100 * gateway_cpu / elapsed, 1)
        cell.gateway_rss_after_mib = round(gateway.rss_mib(), 1)
        if latencies:
            cell.gateway_cpu_us_per_request = round(gateway_cpu / len(latencies) * 1e6, 1)
    return cell


def run_async(coroutine: Any) -> Any:
    """uvloop when installed (it is in .venv): the load generator should cost little."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class TargetRun:
    name: str
    cells: list[Cell] = field(default_factory=list)
    idle_rss_mib: float | None = None
    peak_rss_mib: float | None = None
    note: str | None = None
    log_tail: list[str] = field(default_factory=list)  # its last lines, for the record


@dataclass
class Target:
    """What the load generator calls: the upstream itself (no gateway) or a gateway."""

    url: str
    key: str
    gateway: Service | None
    run: TargetRun
    responses_url: str | None = None  # Apiary's /v1/responses; None: not measured there


def run_targets(targets: Sequence[Target], *, upstream: Service, args: argparse.Namespace) -> None:
    """Every cell of every target, the targets taken in turn within each cell.

    Several gateways (log levels, `--ref` builds) run side by side, idle but for the one
    being measured, so a change in the machine's load between minutes falls on all of
    them alike; the first target keeps its place and the others swap order every cell.
    With `--repeat N` the whole round is done N times and each figure is the median of
    its N measurements."""
    for target in targets:
        if target.gateway is not None:
            target.run.idle_rss_mib = round(target.gateway.rss_mib(), 1)
    cells = [(mode, concurrency) for mode in args.modes for concurrency in args.concurrencies]
    measured: dict[tuple[int, str, int], list[Cell]] = {}
    for index, (mode, concurrency) in enumerate(cells * args.repeat):
        order = [*targets[:1], *(targets[1:] if index % 2 == 0 else reversed(targets[1:]))]
        for target in order:
            name, gateway = target.run.name, target.gateway
            url = target.url
            if mode == "responses":
                if target.responses_url is not None:
                    url = target.responses_url
                elif gateway is not None:
                    continue  # LiteLLM, the floor: only Apiary's Responses API is measured
            cell = run_async(
                _measure(
                    name,
                    url,
                    target.key,
                    mode=mode,
                    concurrency=concurrency,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    max_requests=args.max_requests,
                    gateway=gateway,
                    upstream=upstream,
                )
            )
            measured.setdefault((id(target), mode, concurrency), []).append(cell)
            print(
                f"  {name:<24} {mode:<6} c={concurrency:<3} {cell.rps:>8.1f} req/s  "
                f"p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms"
                + (f"  CPU {cell.gateway_cpu_us_per_request or 0:5.0f} µs/req" if gateway else "")
                + (f"  RSS {cell.gateway_rss_after_mib:.0f} MiB" if gateway else "")
                + (f"  errors {cell.errors}" if cell.errors else ""),
                flush=True,
            )
            if gateway is not None and not gateway.alive():
                raise RuntimeError(f"{gateway.name} died:\n{gateway.log_tail()}")
    for target in targets:
        for mode, concurrency in cells:
            if (id(target), mode, concurrency) in measured:
                target.run.cells.append(_median_cell(measured[(id(target), mode, concurrency)]))
        if target.gateway is not None:
            target.run.peak_rss_mib = round(target.gateway.peak_rss_mib(), 1)
            target.run.log_tail = [line[:500] for line in target.gateway.log_tail(10).splitlines()]


def _median_cell(repeats: list[Cell]) -> Cell:
    """One cell from its repeats: each figure's median, requests and errors summed."""
    if len(repeats) == 1:
        return repeats[0]
    merged = Cell(
        target=repeats[0].target, mode=repeats[0].mode, concurrency=repeats[0].concurrency
    )
    merged.requests = sum(c.requests for c in repeats)
    merged.errors = sum(c.errors for c in repeats)
    merged.first_error = next((c.first_error for c in repeats if c.first_error), None)
    merged.elapsed_s = round(sum(c.elapsed_s for c in repeats), 3)
    for name in (
        "rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "ttfb_p50_ms",
        "gateway_cpu_pct",
        "gateway_cpu_us_per_request",
        "gateway_rss_after_mib",
        "loadgen_core_pct",
        "others_on_gateway_core_pct",
        "others_on_loadgen_core_pct",
    ):
        values = [v for c in repeats if (v := getattr(c, name)) is not None]
        setattr(merged, name, round(statistics.median(values), 3) if values else None)
    return merged


def add_overhead(runs: list[TargetRun]) -> None:
    direct = {(c.mode, c.concurrency): c for c in runs[0].cells}
    for run in runs[1:]:
        for cell in run.cells:
            base = direct[(cell.mode, cell.concurrency)]
            cell.added_p50_ms = round(cell.p50_ms - base.p50_ms, 3)
            cell.added_p95_ms = round(cell.p95_ms - base.p95_ms, 3)
            cell.added_p99_ms = round(cell.p99_ms - base.p99_ms, 3)


def _cell(run: TargetRun | None, mode: str, concurrency: int) -> Cell | None:
    if run is None:
        return None
    return next((c for c in run.cells if c.mode == mode and c.concurrency == concurrency), None)


def verdicts(apiary: TargetRun, litellm: TargetRun | None) -> dict[str, Any]:
    """The ratios and the issue's targets, each with its measured value and pass/fail."""
    ratios: dict[str, float | None] = {}
    for mode in MODES:
        for concurrency in CONCURRENCIES:
            ours, theirs = _cell(apiary, mode, concurrency), _cell(litellm, mode, concurrency)
            ratio = None
            if ours and theirs and theirs.rps > 0:
                ratio = round(ours.rps / theirs.rps, 1)
            ratios[f"{mode}_c{concurrency}"] = ratio
    # CPU time per request is what one core's capacity follows, and unlike requests/s it
    # does not move when other work on the machine takes a share of the gateway's core.
    cpu_ratios: dict[str, float | None] = {}
    for mode in MODES:
        for concurrency in CONCURRENCIES:
            ours, theirs = _cell(apiary, mode, concurrency), _cell(litellm, mode, concurrency)
            ratio = None
            if ours and theirs and ours.gateway_cpu_us_per_request:
                ratio = round(
                    (theirs.gateway_cpu_us_per_request or 0) / ours.gateway_cpu_us_per_request, 1
                )
            cpu_ratios[f"{mode}_c{concurrency}"] = ratio
    json10, stream10 = ratios["json_c10"], ratios["stream_c10"]
    added = _cell(apiary, "json", 1)
    added_p50 = added.added_p50_ms if added else None
    chat, responses = _cell(apiary, "json", 10), _cell(apiary, "responses", 10)
    responses_share = (
        round(responses.rps / chat.rps, 3) if chat and responses and chat.rps > 0 else None
    )
    checks = {
        "rps_ratio_json_c10": {
            "value": json10,
            "target": f">= {TARGET_RPS_RATIO_JSON:g}x",
            "met": json10 is not None and json10 >= TARGET_RPS_RATIO_JSON,
        },
        "rps_ratio_stream_c10": {
            "value": stream10,
            "target": f">= {TARGET_RPS_RATIO_STREAM:g}x",
            "met": stream10 is not None and stream10 >= TARGET_RPS_RATIO_STREAM,
        },
        "added_p50_ms_json_c1": {
            "value": added_p50,
            "target": f"< {TARGET_ADDED_P50_MS:g} ms",
            "met": added_p50 is not None and added_p50 < TARGET_ADDED_P50_MS,
        },
        "responses_share_of_chat_c10": {
            "value": responses_share,
            "target": f">= {TARGET_RESPONSES_RPS_SHARE:g}",
            "met": responses_share is not None and responses_share >= TARGET_RESPONSES_RPS_SHARE,
        },
        "peak_rss_mib": {
            "value": apiary.peak_rss_mib,
            "target": f"< {TARGET_PEAK_RSS_MIB:g} MiB",
            "met": apiary.peak_rss_mib is not None and apiary.peak_rss_mib < TARGET_PEAK_RSS_MIB,
        },
    }
    return {
        "rps_ratio_vs_litellm": ratios,
        "cpu_per_request_ratio_litellm_over_apiary": cpu_ratios,
        "targets": checks,
    }


def rps_shares(ours: TargetRun, base: TargetRun) -> dict[str, float | None]:
    """`ours`' req/s as a share of `base`'s in each cell both measured (None where not)."""
    shares: dict[str, float | None] = {}
    for mode in MODES:
        for concurrency in CONCURRENCIES:
            mine, theirs = _cell(ours, mode, concurrency), _cell(base, mode, concurrency)
            share = None
            if mine and theirs and theirs.rps > 0:
                share = round(mine.rps / theirs.rps, 3)
            shares[f"{mode}_c{concurrency}"] = share
    return shares


def production_verdicts(embedded: TargetRun, production: TargetRun) -> dict[str, Any]:
    """Production mode (PostgreSQL + Redis) against the same build embedded, measured in
    turn in the same cells: issue 16's targets."""
    shares = rps_shares(production, embedded)
    json10 = shares["json_c10"]
    added = _cell(production, "json", 1)
    added_p50 = added.added_p50_ms if added else None
    return {
        "rps_share_of_embedded": shares,
        "targets": {
            "rps_share_json_c10": {
                "value": json10,
                "target": f">= {TARGET_PRODUCTION_RPS_SHARE:g}",
                "met": json10 is not None and json10 >= TARGET_PRODUCTION_RPS_SHARE,
            },
            "added_p50_ms_json_c1": {
                "value": added_p50,
                "target": f"< {TARGET_PRODUCTION_ADDED_P50_MS:g} ms",
                "met": added_p50 is not None and added_p50 < TARGET_PRODUCTION_ADDED_P50_MS,
            },
        },
    }


def messages_verdict(chat: TargetRun, messages: TargetRun) -> dict[str, Any]:
    """/v1/messages' req/s as a share of chat's, per mode at c=10 (issue 18's target)."""
    checks: dict[str, Any] = {}
    for mode in MODES:
        ours, theirs = _cell(messages, mode, 10), _cell(chat, mode, 10)
        if ours is None or theirs is None or not theirs.rps:
            continue
        share = ours.rps / theirs.rps
        checks[f"{mode}_c10"] = {
            "value": round(share, 3),
            "target": TARGET_MESSAGES_RPS_SHARE,
            "met": share >= TARGET_MESSAGES_RPS_SHARE,
        }
    return checks


def tracing_verdicts(untraced: TargetRun, traced: TargetRun) -> dict[str, Any]:
    """Tracing on (sampled, exporting) against the same build with it off, measured in turn
    in the same cells: issue 17's cost target."""
    shares = rps_shares(traced, untraced)
    json10 = shares["json_c10"]
    return {
        "rps_share_of_untraced": shares,
        "targets": {
            "rps_share_json_c10": {
                "value": json10,
                "target": f">= {TARGET_TRACING_RPS_SHARE:g}",
                "met": json10 is not None and json10 >= TARGET_TRACING_RPS_SHARE,
            },
        },
    }


def traced_env(
    otlp_url: str,
    args: argparse.Namespace,
    source: Path | None,
    workdir: Path,
    name: str,
    alternations: list[tuple[str, Path]],
) -> dict[str, str]:
    """A traced server's environment; with `--tracing-alternate`, bench/alternate/ first on
    its path, switching its tracing off and on (the phase lines' file is added to
    `alternations`)."""
    env = {
        "APIARY_OTEL__ENDPOINT": otlp_url,
        "APIARY_OTEL__SAMPLING_RATIO": str(args.tracing_ratio),
    }
    if args.tracing_alternate:
        lines = workdir / f"alternate-{len(alternations)}.txt"
        alternations.append((name, lines))
        tree = source if source is not None else ROOT
        env["PYTHONPATH"] = f"{BENCH / 'alternate'}{os.pathsep}{tree}"
        env["BENCH_TRACING_ALTERNATE_S"] = str(args.tracing_alternate)
        env["BENCH_TRACING_ALTERNATE_OUT"] = str(lines)
    return env


def alternation_summary(lines: Path, phase_s: float) -> dict[str, Any] | None:
    """The traced server's phases (bench/alternate/sitecustomize.py) under load: CPU µs a
    request with tracing off and on, pooled, and their difference paired phase by phase
    (an "on" phase with the "off" phase just before it), so drift in the machine's speed
    cancels. Phases while other servers were measured (idle) or only partly loaded (at
    a cell's edges: under half the median count) are left out."""
    if not lines.exists():
        return None
    phases = [line.split() for line in lines.read_text().splitlines() if line.strip()]
    rows = [(on == "1", int(count), float(cpu)) for on, count, cpu in phases]
    loaded = [count for _, count, _ in rows if count > 0]
    if not loaded:
        return None
    floor = statistics.median(loaded) / 2
    kept = [row if row[1] >= floor else None for row in rows]
    added = [
        now[2] / now[1] * 1e6 - before[2] / before[1] * 1e6
        for before, now in itertools.pairwise(kept)
        if before is not None and now is not None and now[0] and not before[0]
    ]
    if len(added) < 2:
        return None
    off = [row for row in kept if row is not None and not row[0]]
    on = [row for row in kept if row is not None and row[0]]
    off_us = sum(cpu for *_, cpu in off) / sum(count for _, count, _ in off) * 1e6
    on_us = sum(cpu for *_, cpu in on) / sum(count for _, count, _ in on) * 1e6
    return {
        "phase_s": phase_s,
        "pairs": len(added),
        "off_us": round(off_us, 1),
        "on_us": round(on_us, 1),
        "added_us": round(statistics.mean(added), 2),
        "added_us_se": round(statistics.stdev(added) / len(added) ** 0.5, 2),
        # A server bound by one core serves requests/s in inverse proportion to the CPU
        # each takes: the share of req/s tracing leaves.
        "share": round(off_us / on_us, 4),
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(runs: list[TargetRun]) -> str:
    head = (
        "| target | mode | c | req/s | p50 ms | p95 ms | p99 ms | added p50 | added p95 "
        "| added p99 | gateway CPU | CPU µs/req | CPU 0 | others on CPU 1 | errors |"
    )
    lines = [head, "|" + " --- |" * 15]
    for run in runs:
        for c in run.cells:
            lines.append(
                f"| {run.name} | {c.mode} | {c.concurrency} | {c.rps:,.0f} | {c.p50_ms:.2f} "
                f"| {c.p95_ms:.2f} | {c.p99_ms:.2f} | {_fmt(c.added_p50_ms)} "
                f"| {_fmt(c.added_p95_ms)} | {_fmt(c.added_p99_ms)} "
                f"| {_fmt(c.gateway_cpu_pct, 0)}{'%' if c.gateway_cpu_pct is not None else ''} "
                f"| {_fmt(c.gateway_cpu_us_per_request, 0)} | {_fmt(c.loadgen_core_pct, 0)}% "
                f"| {_fmt(c.others_on_gateway_core_pct, 0)}% | {c.errors} |"
            )
    return "\n".join(lines)


def summary(runs: list[TargetRun], headline: TargetRun, litellm: TargetRun | None) -> str:
    result = verdicts(headline, litellm)
    out = [f"Ratios {headline.name} / litellm (requests/s):"]
    for mode in MODES:
        parts = [
            f"c={c}: {_fmt(result['rps_ratio_vs_litellm'][f'{mode}_c{c}'], 1)}x"
            for c in CONCURRENCIES
        ]
        out.append(f"  {mode:<6} " + "   ".join(parts))
    out.append(f"CPU time per request, litellm / {headline.name} (robust to other load):")
    cpu_ratios = result["cpu_per_request_ratio_litellm_over_apiary"]
    for mode in MODES:
        parts = [f"c={c}: {_fmt(cpu_ratios[f'{mode}_c{c}'], 1)}x" for c in CONCURRENCIES]
        out.append(f"  {mode:<6} " + "   ".join(parts))
    out.append(f"Targets ({headline.name}):")
    for name, check in result["targets"].items():
        mark = "PASS" if check["met"] else "FAIL"
        out.append(f"  {mark}  {name:<22} {_fmt(check['value'], 2):>8}   target {check['target']}")
    out.append("Gateway memory (MiB, VmRSS when ready / VmHWM after the run):")
    for run in runs[1:]:
        out.append(
            f"  {run.name:<16} idle {_fmt(run.idle_rss_mib, 1)}  peak {_fmt(run.peak_rss_mib, 1)}"
        )
    return "\n".join(out)


def _git(*args: str) -> str:
    done = subprocess.run(  # noqa: S603 - fixed git queries
        [GIT, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short cells: a smoke run")
    parser.add_argument("--duration", type=float, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per cell")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per cell")
    parser.add_argument(
        "--log-levels",
        default="INFO,WARNING",
        help="APIARY_LOG_LEVEL values to run Apiary with; the first is the headline",
    )
    parser.add_argument("--skip-litellm", action="store_true", help="Apiary vs direct only")
    parser.add_argument(
        "--production",
        action="store_true",
        help="also run every build on PostgreSQL and Redis of its own, as deployed, "
        "beside the same build on its embedded defaults",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also run every build with OpenTelemetry tracing on, exporting to a local OTLP "
        "receiver, beside the same build with tracing off",
    )
    parser.add_argument(
        "--tracing-ratio",
        type=float,
        default=0.1,
        help="APIARY_OTEL__SAMPLING_RATIO of the traced builds",
    )
    parser.add_argument(
        "--tracing-alternate",
        type=float,
        metavar="SECONDS",
        help="with --tracing: also switch tracing off and on in turn every SECONDS inside "
        "the traced server, and compare its CPU per request in the two (bench/alternate/)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure a bare pass-through on Apiary's server stack "
        "(bench/passthrough_server.py)",
    )
    parser.add_argument(
        "--ref",
        action="append",
        help="run Apiary from `git archive REF` (e.g. HEAD) instead of the working tree; "
        f"repeat it to measure several builds side by side, `{WORKTREE}` being the working tree",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="which of json,stream,responses to measure"
    )
    parser.add_argument(
        "--concurrencies",
        default=",".join(map(str, CONCURRENCIES)),
        help="which concurrencies to measure, e.g. 1,10",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure every cell this many times, in rounds; each figure is the median",
    )
    parser.add_argument(
        "--messages",
        action="store_true",
        help="also measure the headline build's /v1/messages (the same request in "
        "Anthropic's format) beside its /v1/chat/completions",
    )
    parser.add_argument("--out", type=Path, help="JSON results path")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes: a comma-separated subset of {','.join(MODES)}")
    args.concurrencies = [int(c) for c in args.concurrencies.split(",") if c]
    args.repeat = max(1, args.repeat)
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0
    args.log_levels = [level.strip().upper() for level in args.log_levels.split(",") if level]
    return args


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the `finally` that stops services runs."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print(
            "this benchmark pins the gateway and the load to two different cores", file=sys.stderr
        )
        return 2
    litellm_binary: Path | None = None
    litellm_note = "skipped (--skip-litellm)"
    if not args.skip_litellm:
        litellm_binary, litellm_note = ensure_litellm()
        if litellm_binary is None:
            print(
                f"\n*** LiteLLM is NOT measured: its install failed ({litellm_note}).\n"
                "*** Reporting Apiary against the direct upstream only.\n",
                file=sys.stderr,
                flush=True,
            )
    os.sched_setaffinity(0, {LOADGEN_CPU})  # this process is the load generator
    started_at = dt.datetime.now(dt.UTC)
    loadavg_at_start = Path("/proc/loadavg").read_text().split()[:3]
    services = Services()
    runs: list[TargetRun] = []
    apiary_runs: list[tuple[str, TargetRun]] = []
    production_runs: list[tuple[str, TargetRun]] = []  # each beside apiary_runs' same entry
    messages_runs: list[tuple[TargetRun, TargetRun]] = []  # (chat, /v1/messages), one build
    traced_runs: list[tuple[str, TargetRun]] = []  # likewise
    alternations: list[tuple[str, Path]] = []  # (traced run's name, its phase lines)
    alternated: dict[str, dict[str, Any]] = {}
    otlp_url: str | None = None
    backends: Backends | None = None
    litellm_run: TargetRun | None = None
    with terminate_cleanly(), tempfile.TemporaryDirectory(prefix="apiary-bench-") as tmp:
        workdir = Path(tmp)
        # (label, tree on PYTHONPATH or None for the working tree, what it is)
        builds: list[tuple[str, Path | None, str]] = []
        for index, ref in enumerate(args.ref or [WORKTREE]):
            if ref == WORKTREE:
                note = f"working tree at {_git('rev-parse', 'HEAD')[:12]}"
                dirty = len(_git("status", "--porcelain", "--", "apiary", "tests").splitlines())
                if dirty:
                    note += f" + {dirty} uncommitted file(s) under apiary/ and tests/"
                builds.append(("worktree", None, note))
            else:
                source, commit = export_ref(ref, workdir, name=f"source-{index}")
                builds.append((ref, source, f"git archive {ref} = {commit[:12]}"))
        source_note = "; ".join(f"{label}: {note}" for label, _, note in builds)
        print(f"Apiary source: {source_note}", flush=True)
        try:
            upstream, upstream_url = start_upstream(services, workdir, source=builds[0][1])
            print(f"fake upstream on {upstream_url} (CPU {LOADGEN_CPU})", flush=True)
            direct = Target(
                f"{upstream_url}/v1/chat/completions",
                UPSTREAM_KEY,
                gateway=None,
                run=TargetRun("direct"),
            )
            targets = [direct]
            if args.floor:
                floor, floor_url = start_floor(services, workdir, upstream_url, source=builds[0][1])
                print(f"floor: bench/passthrough_server.py (CPU {GATEWAY_CPU})", flush=True)
                targets.append(
                    Target(floor_url, UPSTREAM_KEY, gateway=floor, run=TargetRun("floor"))
                )
            if args.production:
                backends = Backends(workdir)
                print(f"production backends: PostgreSQL and Redis (CPU {LOADGEN_CPU})", flush=True)
            if args.tracing:
                _, otlp_url = start_otlp_sink(services, workdir)
                print(f"OTLP receiver on {otlp_url} (CPU {LOADGEN_CPU})", flush=True)
            deployments = ["embedded", "production"] if args.production else ["embedded"]
            if args.tracing:
                deployments.append("traced")
            for level in args.log_levels:
                for index, (label, source, _) in enumerate(builds):
                    for deployment in deployments:
                        name = "apiary" if len(builds) == 1 else f"apiary@{label}"
                        name += "+pg+redis" if deployment == "production" else ""
                        name += f"+otel@{args.tracing_ratio:g}" if deployment == "traced" else ""
                        name += f"[{level}]"
                        try:
                            service, url, key, limits = start_apiary(
                                services,
                                workdir,
                                upstream_url,
                                log_level=level,
                                source=source,
                                name=f"-{index}-{deployment}",
                                backends=backends.new()
                                if backends is not None and deployment == "production"
                                else None,
                                extra_env=traced_env(
                                    str(otlp_url), args, source, workdir, name, alternations
                                )
                                if deployment == "traced"
                                else None,
                            )
                        except (RuntimeError, subprocess.TimeoutExpired) as error:
                            print(f"\n*** Apiary did not start: {error}", file=sys.stderr)
                            return 1
                        print(
                            f"{name}: apiary serve, log level {level} (CPU {GATEWAY_CPU}); "
                            f"limits {limits}",
                            flush=True,
                        )
                        run = TargetRun(name)
                        run.note = (
                            f"APIARY_LOG_LEVEL={level}, logs to a file; budget and rate limits "
                            f"{limits}; "
                            + (
                                "PostgreSQL and Redis (data, counters, cache)"
                                if deployment == "production"
                                else "embedded (SQLite, counters in process)"
                            )
                            + (
                                f"; tracing on, sampling ratio {args.tracing_ratio:g}, OTLP/HTTP "
                                "to a local receiver"
                                if deployment == "traced"
                                else ""
                            )
                        )
                        responses_url = url.replace("/v1/chat/completions", "/v1/responses")
                        targets.append(
                            Target(url, key, gateway=service, run=run, responses_url=responses_url)
                        )
                        if args.messages and not messages_runs and deployment == "embedded":
                            # The bench's chat body (model, messages, max_tokens, stream) is
                            # a valid Messages request as it stands.
                            messages_run = TargetRun(f"{name} /v1/messages", note=run.note)
                            targets.append(
                                Target(
                                    url.replace("/v1/chat/completions", "/v1/messages"),
                                    key,
                                    gateway=service,
                                    run=messages_run,
                                )
                            )
                            messages_runs.append((run, messages_run))
                        key_name = level if len(builds) == 1 else f"{label}_{level}"
                        if deployment == "production":
                            production_runs.append((key_name, run))
                        elif deployment == "traced":
                            traced_runs.append((key_name, run))
                        else:
                            apiary_runs.append((key_name, run))
            run_targets(targets, upstream=upstream, args=args)
            runs.extend(target.run for target in targets)
            for name, lines in alternations:
                found = alternation_summary(lines, args.tracing_alternate)
                if found is not None:
                    alternated[name] = found
            if otlp_url is not None:
                with urllib.request.urlopen(f"{otlp_url}/stats", timeout=5) as answer:  # noqa: S310
                    otlp_received = json.loads(answer.read())
                print(f"OTLP receiver: {otlp_received}", flush=True)
            for target in targets[1:]:
                assert target.gateway is not None
                services.stop(target.gateway)
            if litellm_binary is not None:
                try:
                    service, url, key = start_litellm(
                        services, workdir, upstream_url, litellm_binary
                    )
                except RuntimeError as error:
                    litellm_note = f"did not start: {error}"
                    print(f"\n*** LiteLLM is NOT measured: {litellm_note}\n", file=sys.stderr)
                else:
                    print(f"litellm proxy {litellm_note} (CPU {GATEWAY_CPU})", flush=True)
                    litellm_run = TargetRun("litellm", note=f"litellm {litellm_note}")
                    run_targets(
                        [Target(url, key, gateway=service, run=litellm_run)],
                        upstream=upstream,
                        args=args,
                    )
                    runs.append(litellm_run)
                    services.stop(service)
        finally:
            services.stop_all()
            if backends is not None:
                backends.stop()

    add_overhead(runs)
    headline = apiary_runs[0][1]
    result: dict[str, Any] = {
        "command": " ".join(["bench/gateway.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": started_at.isoformat(timespec="seconds"),
        "apiary_source": source_note,
        "machine": machine(),
        "pinning": {"gateway_cpu": GATEWAY_CPU, "upstream_and_loadgen_cpu": LOADGEN_CPU},
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_requests": args.max_requests,
            "modes": args.modes,
            "concurrencies": args.concurrencies,
            "repeat": args.repeat,
            "request": json.loads(request_body(stream=False)),
            "responses_request": json.loads(responses_body()),
        },
        "headline": headline.name,
        "loadavg_at_start": loadavg_at_start,
        "litellm": litellm_note,
        "runs": [asdict(run) for run in runs],
        **{f"vs_litellm_{level}": verdicts(run, litellm_run) for level, run in apiary_runs},
        **{
            f"traced_vs_untraced_{level}": tracing_verdicts(untraced, traced)
            for (level, untraced), (_, traced) in zip(apiary_runs, traced_runs, strict=False)
        },
        **({"tracing_alternated_in_process": alternated} if alternated else {}),
        **{
            f"production_vs_embedded_{level}": production_verdicts(embedded, production)
            for (level, embedded), (_, production) in zip(
                apiary_runs, production_runs, strict=False
            )
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    out = args.out or RESULTS / f"gateway-{started_at:%Y-%m-%d}{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(table(runs))
    print()
    print(summary(runs, headline, litellm_run))
    for _, run in apiary_runs[1:]:
        ratios = verdicts(run, litellm_run)["rps_ratio_vs_litellm"]
        print(
            f"{run.name}: json c=10 {_fmt(ratios['json_c10'], 1)}x, "
            f"stream c=10 {_fmt(ratios['stream_c10'], 1)}x"
        )
    for (_, embedded), (_, production) in zip(apiary_runs, production_runs, strict=False):
        verdict = production_verdicts(embedded, production)
        shares = verdict["rps_share_of_embedded"]
        print(
            f"{production.name} / {embedded.name} (requests/s): "
            + "   ".join(f"{cell} {_fmt(share, 2)}" for cell, share in shares.items())
        )
        for name, check in verdict["targets"].items():
            mark = "PASS" if check["met"] else "FAIL"
            print(f"  {mark}  {name:<22} {_fmt(check['value'], 2):>8}   target {check['target']}")
    for chat, messages in messages_runs:
        for cell, check in messages_verdict(chat, messages).items():
            mark = "PASS" if check["met"] else "FAIL"
            print(
                f"  {mark}  /v1/messages / chat req/s {cell:<10} {_fmt(check['value'], 2):>6}   "
                f"target {check['target']}"
            )
    for (_, untraced), (_, traced) in zip(apiary_runs, traced_runs, strict=False):
        verdict = tracing_verdicts(untraced, traced)
        shares = verdict["rps_share_of_untraced"]
        print(
            f"{traced.name} / {untraced.name} (requests/s): "
            + "   ".join(f"{cell} {_fmt(share, 3)}" for cell, share in shares.items() if share)
        )
        for name, check in verdict["targets"].items():
            mark = "PASS" if check["met"] else "FAIL"
            print(f"  {mark}  {name:<22} {_fmt(check['value'], 3):>8}   target {check['target']}")
    for name, phases in alternated.items():
        print(
            f"{name}, tracing off and on in turn every {phases['phase_s']:g} s in one process "
            f"({phases['pairs']} pairs of phases): CPU {phases['off_us']:.1f} -> "
            f"{phases['on_us']:.1f} µs/req, {phases['added_us']:+.1f} ± "
            f"{phases['added_us_se']:.1f} µs; share {phases['share']:.3f} against the target "
            f"of {TARGET_TRACING_RPS_SHARE:g}"
        )
        print("  (its rows and req/s share above mix both phases: this line is the figure)")
    if litellm_run is None:
        print(f"LiteLLM: {litellm_note}")
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
