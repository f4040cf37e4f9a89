"""A real Celery worker on the test Redis (`apiary worker` as a user starts it, with its
default pool): SIGKILLed in the middle of a 20-subtask execution, a second worker resumes
it from the checkpoint; and one worker process runs several executions at once. Runs in
pass 1 of `make test` (PostgreSQL + Redis): it is marked `services` and deselected where
they are absent."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from apiary.authz.permissions import Role
from apiary.config import Settings, SwarmSettings
from apiary.db import utcnow
from apiary.executions.models import Execution
from apiary.main import create_app
from apiary.observability.metrics import REGISTRY
from apiary.runtime import Runtime
from apiary.swarm.models import SwarmCheckpointWrite
from apiary.usage.models import LedgerEntry
from apiary.worker.celery_app import QUEUE, QUEUE_LISTS, TASK_NAME, UNACKED
from apiary.worker.requeue import UnreadableMessage, execution_of, ids_in_broker
from tests.conftest import TEST_REDIS
from tests.factories import Caller, make_api_key, make_tenant
from tests.fakes import FakeUpstream, Reply, Slow
from tests.gateway.conftest import providers
from tests.swarm.conftest import FINAL, PRICES, ROUTES
from tests.topology.conftest import wait_final

pytestmark = pytest.mark.services

SUBTASKS = 20
VISIBILITY_S = 3


def _gateway_yaml(upstream: FakeUpstream) -> dict[str, Any]:
    return {
        "providers": [
            p.model_dump(mode="json")
            | {"api_key": p.api_key.get_secret_value() if p.api_key else None}
            for p in providers(upstream)
        ],
        "routes": {
            name: route.model_dump(mode="json", exclude_none=True) for name, route in ROUTES.items()
        },
        "prices": PRICES,
    }


class Workers:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *options: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("apiary")), "worker", *options],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )
        self.started.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def workers(settings: Settings, fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[Workers]:
    config = tmp_path / "apiary.yaml"
    config.write_text(yaml.safe_dump(_gateway_yaml(fake_upstream)))
    env = {
        **os.environ,
        "APIARY_CONFIG": str(config),
        "APIARY_DATABASE_URL": str(settings.database_url),
        "APIARY_REDIS_URL": str(TEST_REDIS),
        "APIARY_DATA_DIR": str(settings.data_dir),
        "APIARY_RUNNER": "celery",
        "APIARY_SWARM__VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        # The killed worker's lease lapses this soon, so the second one may resume it.
        "APIARY_SWARM__LEASE_S": str(VISIBILITY_S),
        "APIARY_LOG_LEVEL": "WARNING",
    }
    env.pop("APIARY_JWT_SECRET", None)
    pool = Workers(env, tmp_path)
    yield pool
    pool.stop_all()


@asynccontextmanager
async def _celery_api(
    settings: Settings, upstream: FakeUpstream, swarm: SwarmSettings
) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(
        update={
            "providers": providers(upstream),
            "routes": ROUTES,
            "prices": PRICES,
            "runner": "celery",
            "swarm": swarm,
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def celery_app(settings: Settings, fake_upstream: FakeUpstream) -> AsyncIterator[FastAPI]:
    # The requeue sweep looks twice a second: in every test here it must find each message
    # (queued, held by a worker, restored from a killed one) and publish nothing twice.
    swarm = SwarmSettings(
        visibility_timeout_s=VISIBILITY_S, requeue_after_s=1, requeue_interval_s=0.5
    )
    async with _celery_api(settings, fake_upstream, swarm) as app:
        yield app


async def _count_writes(runtime: Runtime, execution_id: str) -> int:
    async with runtime.session_factory() as session:
        value = await session.scalar(
            select(func.count(func.distinct(SwarmCheckpointWrite.task_id))).where(
                SwarmCheckpointWrite.thread_id == execution_id,
                SwarmCheckpointWrite.channel == "results",
            )
        )
    return int(value or 0)


async def test_sigkilled_worker_is_resumed_without_repeating_finished_subagents(
    celery_app: FastAPI, workers: Workers, fake_upstream: FakeUpstream
) -> None:
    runtime: Runtime = celery_app.state.runtime
    transport = httpx.ASGITransport(app=celery_app)
    http = httpx.AsyncClient(transport=transport, base_url="http://apiary.test")
    tenant = await make_tenant(runtime, http, "celery-co")
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    agent = await http.post(
        "/api/v1/agents",
        headers=key.headers,
        json={"name": "fanout", "model": "default", "max_subagents": SUBTASKS},
    )
    assert agent.status_code == 201, agent.text
    prompts = [f"subtask {i}" for i in range(SUBTASKS)]
    half = SUBTASKS // 2
    fake_upstream.script(
        "openai",
        Reply(text=orjson.dumps({"subtasks": prompts}).decode(), usage=(5, 5)),
        *(Slow(0.3, Reply(text="finished", usage=(5, 5))) for _ in range(half)),
    )
    fake_upstream.set_default("openai", Slow(60))  # the other half is mid-call at the kill

    requeued_before = _requeued()
    first = workers.start()
    started = await http.post(
        "/api/v1/executions",
        headers=key.headers,
        json={"agent_id": agent.json()["id"], "task": "do twenty things"},
    )
    assert started.status_code == 202, started.text
    execution_id = started.json()["id"]
    for _ in range(1200):  # half finished, their writes in the checkpoint (+1: the input)
        if await _count_writes(runtime, execution_id) >= half + 1:
            break
        await asyncio.sleep(0.05)
    assert await _count_writes(runtime, execution_id) == half + 1
    workers.kill(first)

    fake_upstream.set_default("openai", Reply(text="resumed", usage=(5, 5)))
    workers.start()
    execution = await wait_final(http, execution_id, key.headers, 120)
    assert execution["state"] == "succeeded", execution
    assert execution["answer"]

    asked: Counter[str] = Counter()
    for request in fake_upstream.requests_for("openai"):
        assert request.body is not None
        asked[request.body["messages"][-1]["content"]] += 1
    results = {s["prompt"]: s["result"] for s in execution["subtasks"]}
    finished_first = [p for p, r in results.items() if r == "finished"]
    resumed = [p for p, r in results.items() if r == "resumed"]
    assert len(finished_first) == half
    assert len(resumed) == SUBTASKS - half
    for prompt in finished_first:
        assert asked[prompt] == 1, prompt  # finished before the kill: never asked again
    for prompt in resumed:
        assert asked[prompt] == 2, prompt  # cut off by the kill, asked again once

    # One ledger row per completed upstream call: the plan, 20 sub-agents, the synthesis.
    rows: list[LedgerEntry] = []
    for _ in range(100):  # the worker's last batch may still be in flight
        async with runtime.session_factory() as session:
            statement = select(LedgerEntry).where(LedgerEntry.tenant_id == uuid_of(tenant.id))
            rows = list((await session.scalars(statement)).all())
        if len(rows) >= 1 + SUBTASKS + 1:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and nothing more arrives: a duplicate would show here
    async with runtime.session_factory() as session:
        statement = select(LedgerEntry).where(LedgerEntry.tenant_id == uuid_of(tenant.id))
        rows = list((await session.scalars(statement)).all())
    assert len(rows) == 1 + SUBTASKS + 1
    assert {str(r.execution_id) for r in rows} == {execution_id}
    # The killed worker's message, held, restored and taken again, was never missed.
    assert _requeued() == requeued_before
    assert sum(r.cost_usd or 0 for r in rows) == pytest.approx(execution["cost_usd"])
    await http.aclose()


async def test_one_worker_process_runs_several_executions_at_once(
    celery_app: FastAPI, workers: Workers, fake_upstream: FakeUpstream
) -> None:
    """Two executions given to one worker of concurrency 2 are both under way before
    either ends, in one process (the threads pool: no forked children), and both succeed."""
    runtime: Runtime = celery_app.state.runtime
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=celery_app), base_url="http://t")
    tenant = await make_tenant(runtime, http, "celery-two")
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    agent = await http.post(
        "/api/v1/agents",
        headers=key.headers,
        json={"name": "pair", "model": "default", "max_subagents": 2},
    )
    assert agent.status_code == 201, agent.text
    # Every call takes 1.5 s; the plan is not JSON, so each runs as one sub-agent.
    fake_upstream.set_default("openai", Slow(1.5, Reply(text="done", usage=(5, 5))))

    worker = workers.start("--concurrency=2")
    ids = []
    for task in ("first", "second"):
        started = await http.post(
            "/api/v1/executions",
            headers=key.headers,
            json={"agent_id": agent.json()["id"], "task": task},
        )
        assert started.status_code == 202, started.text
        ids.append(started.json()["id"])

    states: dict[str, str] = {}
    together = False  # both taken from the queue, neither finished
    for _ in range(600):
        for execution_id in ids:
            detail = await http.get(f"/api/v1/executions/{execution_id}", headers=key.headers)
            states[execution_id] = detail.json()["state"]
        if all(state not in FINAL and state != "queued" for state in states.values()):
            together = True
        if all(state in FINAL for state in states.values()):
            break
        await asyncio.sleep(0.05)
    assert together, states
    assert set(states.values()) == {"succeeded"}, states
    assert _children(worker.pid) == [], "the threads pool runs them in the worker's process"
    await http.aclose()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue  # it exited meanwhile
            if parent == pid:
                found.append(int(entry.name))
    return found


def uuid_of(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


async def _start_execution(http: httpx.AsyncClient, key: Caller, agent_id: str, task: str) -> str:
    started = await http.post(
        "/api/v1/executions", headers=key.headers, json={"agent_id": agent_id, "task": task}
    )
    assert started.status_code == 202, started.text
    return str(started.json()["id"])


async def _lose(redis: Redis, execution_id: str) -> None:
    """Its messages taken off the queue, as a Redis that lost them."""
    for raw in await redis.lrange(QUEUE, 0, -1):
        if execution_of(orjson.loads(raw)) == execution_id:
            await redis.lrem(QUEUE, 0, str(raw))


def _requeued() -> float:
    return REGISTRY.get_sample_value("apiary_executions_requeued_total") or 0.0


def _broker() -> Redis:
    return Redis.from_url(str(TEST_REDIS), decode_responses=True)


async def test_an_execution_whose_message_was_lost_is_published_again_and_runs_once(
    celery_app: FastAPI, workers: Workers, fake_upstream: FakeUpstream
) -> None:
    """Redis loses the queue (a restart without its data): the execution it held stays
    queued until the API's requeue sweep publishes it again; a worker then runs it once."""
    runtime: Runtime = celery_app.state.runtime
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=celery_app), base_url="http://t")
    tenant = await make_tenant(runtime, http, "celery-lost")
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    agent = await http.post("/api/v1/agents", headers=key.headers, json={"name": "lost"})
    assert agent.status_code == 201, agent.text
    fake_upstream.set_default("openai", Reply(text="found again", usage=(5, 5)))
    requeued_before = _requeued()

    execution_id = await _start_execution(http, key, agent.json()["id"], "lost in Redis")
    redis = _broker()
    assert execution_id in await ids_in_broker(redis)
    await redis.delete(QUEUE)  # no worker has taken it yet: the message is gone for good
    assert execution_id not in await ids_in_broker(redis)

    workers.start()
    execution = await wait_final(http, execution_id, key.headers, 60)
    assert execution["state"] == "succeeded", execution
    assert execution["answer"] == "found again"
    assert _requeued() - requeued_before == 1  # the message it was given was found after
    async with runtime.session_factory() as session:
        stored = await session.get(Execution, uuid_of(execution_id))
    assert stored is not None
    assert stored.attempts == 1  # one run, never resumed
    # The plan (not JSON, so the task runs as one sub-agent) and that sub-agent: once each.
    assert len(fake_upstream.requests_for("openai")) == 2
    await redis.aclose()
    await http.aclose()


@pytest.mark.usefixtures("app")  # the clean slate: an empty queue and no other executions
async def test_the_requeue_sweep_publishes_only_what_no_message_names(
    settings: Settings, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Without workers: an execution waiting in the queue, one a worker holds (Kombu's
    `unacked` hash), one finished and one just made are left alone; only the idle one whose
    message is gone is published, once it was missing in two sweeps (of any replica), and
    at most three times."""
    swarm = SwarmSettings(requeue_after_s=60, requeue_interval_s=3600)  # sweeps by hand only
    async with _celery_api(settings, fake_upstream, swarm) as app:
        runtime: Runtime = app.state.runtime
        sweep = runtime.runner.requeue  # type: ignore[attr-defined]
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        tenant = await make_tenant(runtime, http, "celery-sweep")
        key = await make_api_key(runtime, tenant, Role.DEVELOPER)
        agent = (await http.post("/api/v1/agents", headers=key.headers, json={"name": "s"})).json()
        waiting, held, lost, done = [
            await _start_execution(http, key, agent["id"], task)
            for task in ("waiting", "held", "lost", "done")
        ]
        async with runtime.session_factory() as session:  # idle for an hour, by their clock
            await session.execute(
                update(Execution).values(updated_at=utcnow() - dt.timedelta(hours=1))
            )
            await session.execute(
                update(Execution).where(Execution.id == uuid_of(done)).values(state="succeeded")
            )
            await session.commit()
        assert await sweep.sweep() == []  # every one of them still has its message

        redis = _broker()
        queued = await redis.lrange(QUEUE, 0, -1)
        messages = {execution_of(orjson.loads(raw)): raw for raw in queued}
        assert set(messages) == {waiting, held, lost, done}
        await redis.delete(QUEUE)
        await redis.rpush(QUEUE, messages[waiting])
        # What a worker's Kombu writes when it takes a message: [message, exchange, queue].
        held_entry = orjson.dumps([orjson.loads(messages[held]), "", QUEUE])
        await redis.hset(UNACKED, "held-tag", held_entry)
        fresh = await _start_execution(http, key, agent["id"], "just made")
        await _lose(redis, fresh)

        try:
            assert await sweep.sweep() == []  # missing once: perhaps moving between keys
            other_replica = copy.copy(sweep)  # the misses are kept in Redis, not in a replica
            assert await sweep._claim()  # one replica sweeps an interval: the other waits
            assert not await other_replica._claim()
            assert await other_replica.sweep() == [uuid_of(lost)]  # missing twice: lost
            assert await ids_in_broker(redis) == {waiting, held, lost}  # not `fresh`: not idle
            assert await sweep.sweep() == []  # published: found in the queue now
            # Lost again and again: published at most three times, then left to an operator.
            for _ in range(2):
                await _lose(redis, lost)
                assert await sweep.sweep() == []
                assert await sweep.sweep() == [uuid_of(lost)]
            await _lose(redis, lost)
            assert await sweep.sweep() == []
            with caplog.at_level(logging.ERROR, logger="apiary.worker"):
                assert await sweep.sweep() == []
            assert f"execution {lost} lost its message again" in caplog.text
            # A message of ours it cannot read stops the sweep: it would publish everything.
            await redis.rpush(
                QUEUE, orjson.dumps({"headers": {"task": TASK_NAME}, "body": "?", "properties": {}})
            )
            with pytest.raises(UnreadableMessage):
                await sweep.sweep()
        finally:
            await redis.delete(QUEUE)
            await redis.hdel(UNACKED, "held-tag")
            await redis.aclose()
            await http.aclose()


def test_the_queue_keys_read_are_where_kombu_keeps_the_messages() -> None:
    """The metrics probe and the requeue sweep read the broker's keys by name: they must be
    the ones the installed Kombu writes."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    channel = object.__new__(Channel)  # its key naming only: no connection
    named = tuple(channel._q_for_pri(QUEUE, step) for step in PRIORITY_STEPS)  # type: ignore[no-untyped-call]
    assert named == QUEUE_LISTS
    assert Channel.unacked_key == UNACKED
