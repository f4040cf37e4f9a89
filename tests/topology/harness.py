"""The production topology on one machine: PostgreSQL and Redis of its own on 127.0.0.1
(scripts/services.sh), two `apiary serve` replicas on their own ports sharing
`APIARY_JWT_SECRET`, two `apiary worker` processes (`APIARY_RUNNER=celery`), and the fake
upstream (in the caller's event loop) with per-model delays, fixed or spread over a range.

Every process is started as a deployment starts it: `apiary init` once, then the same
`apiary serve` / `apiary worker` commands, configured by `APIARY_*` environment keys and
the YAML file `APIARY_CONFIG` names. Any one of them can be killed, stopped (SIGSTOP),
continued and restarted, and so can Redis and PostgreSQL, which is what the scenarios in
tests/topology/ do. The pair is the harness's own, never the test session's, because the
scenarios take it down.

Outside pytest: `python -m tests.topology.harness` brings it all up and prints the URLs
until interrupted (for benchmarks and poking at it by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

from tests.fakes import DEFAULT_API_KEY, FakeUpstream
from tests.fakes.upstream import Behaviour, Endpoint, Family

REPO = Path(__file__).resolve().parents[2]
APIARY_BIN = Path(sys.executable).with_name("apiary")
SERVICES = REPO / "scripts" / "services.sh"
# The gateway's view of the fake upstream: one provider, one route, a price per token.
ROUTES = {"default": {"models": ["oai/gpt-4o-mini"]}, "slow": {"models": ["oai/gpt-4o"]}}
PRICES = {
    "oai/gpt-4o-mini": {"input": 1000.0, "output": 1000.0},  # $0.001 a token
    "oai/gpt-4o": {"input": 1000.0, "output": 1000.0},
}


# A model's delay: seconds, or (low, high) for a delay within that range per call.
ModelDelay = float | tuple[float, float]


def text_delay(low: float, high: float, text: str) -> float:
    """A delay in [low, high] picked by the message's text (its CRC-32), not at random, so
    a load generator that sent the text knows the upstream's share of the call's time
    (bench/load_locustfile.py computes the same)."""
    return low + (high - low) * zlib.crc32(text.encode()) / 0xFFFFFFFF


_last_message: contextvars.ContextVar[str] = contextvars.ContextVar("last_message", default="")


class DelayedUpstream(FakeUpstream):
    """The fake provider, with a delay per model before each chat reply (a slow model and
    a fast one, as production has; a (low, high) range varies it per call, by the last
    message's text), on top of whatever is scripted; and
    `answers`, replies chosen by the last message's exact text (a swarm's plan, whichever
    execution asks first)."""

    def __init__(self, model_delays: Mapping[str, ModelDelay]) -> None:
        super().__init__()
        self.model_delays = dict(model_delays)
        self.answers: dict[str, Behaviour] = {}
        # The calls not yet answered: the client's port -> the last message's text.
        self.in_flight: dict[int, str] = {}

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peer[1]) if peer else 0
        try:
            with contextlib.suppress(ValueError):
                body = await request.json()  # aiohttp keeps the body for the handler
                messages = body.get("messages") or [{}]
                self.in_flight[port] = str(messages[-1].get("content"))
                _last_message.set(self.in_flight[port])  # this request's task only
                spec = self.model_delays.get(str(body.get("model")), 0.0)
                delay = text_delay(*spec, self.in_flight[port]) if isinstance(spec, tuple) else spec
                if delay:
                    await asyncio.sleep(delay)
            return await super()._openai_chat(request)
        finally:
            self.in_flight.pop(port, None)

    def _next(self, family: Family, endpoint: Endpoint) -> Behaviour | None:
        answer = self.answers.get(_last_message.get())
        return answer if answer is not None else super()._next(family, endpoint)

    def callers(self, pids: Mapping[str, int], prefix: str = "") -> dict[str, int]:
        """How many calls now in flight each of these processes made (found by its
        sockets), counting those whose last message starts with `prefix`."""
        ports = {port for port, text in self.in_flight.items() if text.startswith(prefix)}
        upstream_port = int(self.base_url.rsplit(":", 1)[1])
        found: dict[str, int] = {}
        for name, pid in pids.items():
            inodes = set()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            count = 0
            for table in ("tcp", "tcp6"):
                with open(f"/proc/{pid}/net/{table}") as file:
                    for row in file.readlines()[1:]:
                        fields = row.split()
                        local_port = int(fields[1].rsplit(":", 1)[1], 16)
                        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                        # A local port can serve connections to other servers too.
                        if (
                            local_port in ports
                            and remote_port == upstream_port
                            and (fields[9] in inodes)
                        ):
                            count += 1
            found[name] = count
        return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as_postgres(argv: list[str]) -> list[str]:
    # scripts/services.sh runs PostgreSQL as `postgres` when we are root (it refuses root).
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    port: int | None = None
    killed: bool = False  # by the harness, on purpose

    def start(self) -> None:
        self.killed = False
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach all of it
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        if self.alive():
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        self.killed = True
        if self.alive():
            os.killpg(self.pid, signal.SIGCONT)  # a stopped process must not linger
            os.killpg(self.pid, signal.SIGKILL)
            assert self.popen is not None
            self.popen.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Topology:
    """Bring up with `await Topology.up(workdir)`; `await down()` stops everything."""

    workdir: Path
    upstream: DelayedUpstream
    database_url: str
    redis_url: str
    env: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)
    deaths: list[str] = field(default_factory=list)  # processes that died unasked
    init_output: str = ""  # what `apiary init` printed: the super admin's one-time password

    @property
    def super_admin_password(self) -> str:
        found = re.search(r"password:\s+(\S+)", self.init_output)
        assert found is not None, self.init_output
        return found.group(1)

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def up(
        cls,
        workdir: Path,
        *,
        model_delays: Mapping[str, ModelDelay] | None = None,
        extra_env: Mapping[str, str] | None = None,
        apis: Sequence[str] = ("api-a", "api-b"),
        workers: Sequence[str] = ("worker-1", "worker-2"),
    ) -> Topology:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        upstream = DelayedUpstream(model_delays or {"gpt-4o-mini": 0.05, "gpt-4o": 0.5})
        await upstream.start()
        services = workdir / "services"
        started = await asyncio.to_thread(
            subprocess.run,
            [str(SERVICES), "start", str(services)],
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            await upstream.stop()
            raise RuntimeError(f"services.sh start failed:\n{started.stderr}")
        found = dict(re.findall(r"^(APIARY_TEST_\w+)=(.*)$", started.stdout, re.MULTILINE))
        config = workdir / "apiary.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "providers": [
                        {
                            "name": "oai",
                            "kind": "openai",
                            "base_url": f"{upstream.base_url}/v1",
                            "api_key": DEFAULT_API_KEY,
                            "models": ["gpt-4o-mini", "gpt-4o"],
                        }
                    ],
                    "routes": ROUTES,
                    "prices": PRICES,
                }
            )
        )
        # Only what a deployment sets, plus what finds the interpreter and this checkout.
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
        env |= {
            "PYTHONPATH": str(REPO),
            "APIARY_CONFIG": str(config),
            "APIARY_DATABASE_URL": found["APIARY_TEST_DATABASE_URL"],
            "APIARY_REDIS_URL": found["APIARY_TEST_REDIS_URL"],
            "APIARY_JWT_SECRET": secrets.token_urlsafe(32),
            "APIARY_DATA_DIR": str(workdir / "data"),
            "APIARY_RUNNER": "celery",
            "APIARY_ENVIRONMENT": "production",
            "APIARY_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        topology = cls(
            workdir=workdir,
            upstream=upstream,
            database_url=found["APIARY_TEST_DATABASE_URL"],
            redis_url=found["APIARY_TEST_REDIS_URL"],
            env=env,
        )
        try:
            topology.init_output = await topology.cli("init")
            for name in apis:
                topology.add_api(name)
            for name in workers:
                topology.add_worker(name)
            await asyncio.gather(*(topology.wait_ready(n) for n in apis))
            await topology.wait_workers()
        except BaseException:
            await topology.down()
            raise
        return topology

    async def down(self) -> None:
        for process in self.processes.values():
            process.kill()
        await asyncio.to_thread(
            subprocess.run,
            [str(SERVICES), "stop", str(self.workdir / "services")],
            capture_output=True,
            check=False,
        )
        await self.upstream.stop()

    async def cli(self, *args: str) -> str:
        """Run an `apiary` command as an operator would; its stdout."""
        done = await asyncio.to_thread(
            subprocess.run,
            [str(APIARY_BIN), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"apiary {shlex.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def add_api(self, name: str) -> Process:
        port = _free_port()
        process = Process(
            name,
            [str(APIARY_BIN), "serve", "--host", "127.0.0.1", "--port", str(port)],
            self.env,
            self.workdir / f"{name}.log",
            port=port,
        )
        self.processes[name] = process
        process.start()
        return process

    def add_worker(self, name: str) -> Process:
        process = Process(name, [str(APIARY_BIN), "worker"], self.env, self.workdir / f"{name}.log")
        self.processes[name] = process
        process.start()
        return process

    async def wait_ready(self, name: str, timeout_s: float = 60.0) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if not process.alive():
                    raise RuntimeError(f"{name} exited:\n{process.logs()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{process.url}/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout_s} s:\n{process.logs()}")
                await asyncio.sleep(0.2)

    async def heal(self) -> None:
        """Everything up again after a scenario's faults: Redis, PostgreSQL, every process."""
        if not await self._redis_answers():
            await self.redis_up()
        if self._pg_opts and not (self._pg_data() / "postmaster.pid").exists():
            await self.postgres_up()
        for name, process in self.processes.items():
            process.signal(signal.SIGCONT)
            if not process.alive():
                if process.popen is not None and not process.killed:
                    code = process.popen.returncode
                    self.deaths.append(f"{name} exited on its own ({code})")
                process.start()
            if process.port is not None:
                await self.wait_ready(name)
        await self.wait_workers()

    async def wait_workers(self, timeout_s: float = 60.0) -> None:
        """Until every worker waits on the queue (a started one takes seconds to)."""
        workers = [p for p in self.processes.values() if p.port is None and p.alive()]
        deadline = time.monotonic() + timeout_s
        while True:
            clients = await asyncio.to_thread(
                subprocess.run,
                ["redis-cli", "-h", "127.0.0.1", "-p", self._redis_port(), "client", "list"],
                capture_output=True,
                text=True,
                check=False,
            )
            if clients.stdout.count("cmd=brpop") >= len(workers):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not consuming after {timeout_s} s")
            await asyncio.sleep(0.2)

    async def _redis_answers(self) -> bool:
        ping = await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "-h", "127.0.0.1", "-p", self._redis_port(), "ping"],
            capture_output=True,
            text=True,
            check=False,
        )
        return ping.stdout.strip() == "PONG"

    # -- faults ---------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def pause(self, name: str) -> None:
        self.processes[name].signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.processes[name].signal(signal.SIGCONT)

    async def restart(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.start()
        if process.port is not None:
            await self.wait_ready(name)

    def url(self, name: str) -> str:
        return self.processes[name].url

    def http(self, name: str, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url(name), timeout=30, **kw)

    @property
    def _services(self) -> Path:
        return self.workdir / "services"

    def _redis_port(self) -> str:
        return (self._services / "redis.port").read_text().strip()

    async def redis_down(self, *, keep_data: bool = True) -> None:
        """Stop Redis as a restart does: its data saved to disk first, loaded again by
        `redis_up` (a Redis used as a broker runs with persistence). `keep_data=False`: as
        one without persistence, or a replacement node, comes back: empty."""
        how = "save" if keep_data else "nosave"
        await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "-h", "127.0.0.1", "-p", self._redis_port(), "shutdown", how],
            capture_output=True,
            check=False,
        )
        pid_file = self._services / "redis.pid"
        for _ in range(100):
            if not pid_file.exists():
                break
            await asyncio.sleep(0.05)
        if not keep_data:  # an earlier restart's snapshot would be loaded again
            (self._services / "redis" / "dump.rdb").unlink(missing_ok=True)

    async def redis_up(self) -> None:
        services = self._services
        # As scripts/services.sh started it, on the same port and directory.
        argv = ["redis-server", "--port", self._redis_port(), "--bind", "127.0.0.1"]
        argv += ["--daemonize", "yes", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(services / "redis"), "--pidfile", str(services / "redis.pid")]
        argv += ["--logfile", str(services / "redis.log")]
        await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True)
        for _ in range(200):
            if await self._redis_answers():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("Redis did not come back")

    def _pg_data(self) -> Path:
        pgroot = self._services / "pgroot"
        root = Path(pgroot.read_text().strip()) if pgroot.exists() else self._services / "pg"
        return root / "data"

    async def postgres_down(self) -> None:
        """Stop PostgreSQL (fast shutdown: sessions are cut, as in a failover)."""
        data = self._pg_data()
        # What it was started with, to start it the same way (pg_ctl keeps it only for restart).
        self._pg_opts = (data / "postmaster.opts").read_text().strip()
        pg_ctl = str(Path(shlex.split(self._pg_opts)[0]).with_name("pg_ctl"))
        await asyncio.to_thread(
            subprocess.run,
            _run_as_postgres([pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w"]),
            check=True,
            capture_output=True,
        )

    async def postgres_up(self) -> None:
        data = self._pg_data()
        argv = shlex.split(self._pg_opts)
        pg_ctl = str(Path(argv[0]).with_name("pg_ctl"))
        options = argv[1:]
        if "-D" in options:  # pg_ctl gives -D itself
            at = options.index("-D")
            del options[at : at + 2]
        log = str(data.parent / "postgres.log")
        start = [pg_ctl, "start", "-D", str(data), "-w", "-l", log, "-o", shlex.join(options)]
        await asyncio.to_thread(
            subprocess.run, _run_as_postgres(start), check=True, capture_output=True
        )

    _pg_opts: str = ""


async def _main() -> None:
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="apiary-topology-"))
    topology = await Topology.up(workdir)
    try:
        for name, process in topology.processes.items():
            where = process.url if process.port else f"pid {process.pid}"
            print(f"{name}: {where}  (log {process.log_path})", flush=True)
        print(f"upstream: {topology.upstream.base_url}", flush=True)
        print(f"database: {topology.database_url}\nredis: {topology.redis_url}", flush=True)
        await asyncio.Event().wait()
    finally:
        await topology.down()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
