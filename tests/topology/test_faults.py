"""Redis and PostgreSQL failing under the production topology: what callers see during
the outage, and that nothing is lost once the service is back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
from redis.asyncio import Redis

from apiary.worker.requeue import ids_in_broker
from tests.fakes import Reply, Slow
from tests.topology.conftest import new_key, new_tenant, wait_final
from tests.topology.harness import Topology
from tests.topology.test_executions import TASK, _agent, _decomposition, _plans_asked, _start

pytestmark = pytest.mark.services

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


async def _usage_calls(http: httpx.AsyncClient, headers: dict[str, str], want: int) -> int:
    calls = -1
    for _ in range(100):  # the ledger is written in batches
        response = await http.get("/api/v1/usage/summary", headers=headers)
        if response.status_code == 200:
            calls = int(response.json()["calls"])
            if calls >= want:
                break
        await asyncio.sleep(0.2)
    return calls


async def test_postgres_restart_answers_503_and_loses_nothing(cluster: Topology) -> None:
    chatter = await new_tenant(cluster, "pg-chat")
    _, chat_key = await new_key(cluster, chatter)
    owner = await new_tenant(cluster, "pg-swarm")
    _, swarm_key = await new_key(cluster, owner)
    agent_id = await _agent(cluster, owner, swarm_key)
    upstream = cluster.upstream
    upstream.answers[TASK] = _decomposition()
    upstream.set_default("openai", Slow(0.8, Reply(text="done", usage=(5, 5))))
    chat = {"Authorization": f"Bearer {chat_key}"}
    swarm = {"Authorization": f"Bearer {swarm_key}"}

    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        served = 0
        for http in (a, b):  # the key verified on both replicas
            assert (
                await http.post("/v1/chat/completions", headers=chat, json=CHAT)
            ).status_code == 200
            served += 1
        execution_id = await _start(cluster, agent_id, swarm_key)
        await _fanning_out(a, execution_id, swarm)

        await cluster.postgres_down()
        down_at = time.monotonic()
        answers: list[httpx.Response] = []
        while time.monotonic() - down_at < 4:
            answers += await asyncio.gather(
                a.post("/v1/chat/completions", headers=chat, json=CHAT),
                b.post("/v1/chat/completions", headers=chat, json=CHAT),
                b.get(f"/api/v1/executions/{execution_id}", headers=swarm),
                a.get("/api/v1/agents", headers=swarm),
                a.post(
                    "/api/v1/auth/login", json={"email": owner.admin_email, "password": "x" * 12}
                ),
            )
            await asyncio.sleep(0.3)
        await cluster.postgres_up()

        statuses = Counter(r.status_code for r in answers)
        print(f"during the outage: {dict(statuses)}")
        assert 500 not in statuses, [r.text for r in answers if r.status_code == 500][:2]
        assert statuses[503] > 0
        for refused in (r for r in answers if r.status_code == 503):
            assert int(refused.headers["retry-after"]) >= 1
            assert "database" in refused.text
        served += sum(
            1 for r in answers if r.status_code == 200 and r.url.path == "/v1/chat/completions"
        )

        # Every call answered is in the ledger once PostgreSQL is back, none twice.
        assert await _usage_calls(a, chatter.headers, served) == served
        execution = await wait_final(b, execution_id, swarm, 90)
    assert execution["state"] == "succeeded", execution
    assert all(s["status"] == "succeeded" for s in execution["subtasks"])


async def test_redis_restart_fails_limits_closed_and_loses_nothing(cluster: Topology) -> None:
    free = await new_tenant(cluster, "redis-free")  # no limits: nothing to check in Redis
    _, free_key = await new_key(cluster, free)
    limited = await new_tenant(cluster, "redis-limited")
    _, limited_key = await new_key(cluster, limited)
    async with cluster.http("api-b") as b:
        changed = await b.patch(
            "/api/v1/limits",
            headers=limited.headers,
            json={"key_rpm": 1000, "monthly_budget_usd": 100},
        )
        assert changed.status_code == 200, changed.text
    owner = await new_tenant(cluster, "redis-swarm")
    _, swarm_key = await new_key(cluster, owner)
    agent_id = await _agent(cluster, owner, swarm_key)
    upstream = cluster.upstream
    upstream.answers[TASK] = _decomposition()
    upstream.set_default("openai", Slow(0.8, Reply(text="done", usage=(5, 5))))
    free_auth = {"Authorization": f"Bearer {free_key}"}
    limited_auth = {"Authorization": f"Bearer {limited_key}"}
    swarm = {"Authorization": f"Bearer {swarm_key}"}

    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        running = await _start(cluster, agent_id, swarm_key)
        await _fanning_out(a, running, swarm)

        await cluster.redis_down()
        down_at = time.monotonic()
        free_calls: list[httpx.Response] = []
        limited_calls: list[httpx.Response] = []
        sign_ins: list[httpx.Response] = []
        created: list[httpx.Response] = []
        while time.monotonic() - down_at < 4:
            answers = await asyncio.gather(
                a.post("/v1/chat/completions", headers=free_auth, json=CHAT),
                b.post("/v1/chat/completions", headers=limited_auth, json=CHAT),
                a.post(
                    "/api/v1/auth/login", json={"email": owner.admin_email, "password": "x" * 12}
                ),
                b.post(
                    "/api/v1/executions",
                    headers=swarm,
                    json={"agent_id": agent_id, "task": "while down"},
                ),
            )
            free_calls.append(answers[0])
            limited_calls.append(answers[1])
            sign_ins.append(answers[2])
            created.append(answers[3])
            await asyncio.sleep(0.3)
        await cluster.redis_up()
        up_at = time.monotonic()

        # Nothing to enforce: served. Limits and the sign-in throttle: closed, with a retry.
        assert {r.status_code for r in free_calls} == {200}
        for refused in limited_calls + sign_ins:
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert "Redis" in refused.text
        assert {r.status_code for r in created} == {202}  # committed; published once it is back

        while (
            await b.post("/v1/chat/completions", headers=limited_auth, json=CHAT)
        ).status_code != 200:
            assert time.monotonic() - up_at < 10, "limits did not recover by themselves"
            await asyncio.sleep(0.2)
        print(f"limits back {time.monotonic() - up_at:.1f} s after Redis")

        for execution_id in [running] + [r.json()["id"] for r in created]:
            execution = await wait_final(b, execution_id, swarm, 90)
            assert execution["state"] == "succeeded", execution
        # A worker holding an unacknowledged job when the broker connection drops may exit
        # (Kombu's Redis transport fails to restore the job while closing the channel:
        # "Unrecoverable error: AttributeError ... 'hostname'"). Its supervisor restarts it,
        # and its job is swept back after the visibility timeout, as a killed worker's is.
        await cluster.heal()
        exited = [d for d in cluster.deaths if d.startswith("worker")]
        cluster.deaths = [d for d in cluster.deaths if d not in exited]
        print(f"workers that exited on the broker's restart: {exited or 'none'}")
        listed = (await a.get("/api/v1/executions", headers=swarm)).json()
        assert listed["total"] == 1 + len(created)
        served = len(free_calls)
        assert await _usage_calls(a, free.headers, served) == served


async def test_redis_restarted_without_its_data_loses_no_execution(cluster: Topology) -> None:
    """Redis comes back empty (no persistence, or a replacement node) while executions wait
    for a worker: their messages are gone with it, and the API's requeue sweep publishes
    them again once they have been idle for a while. Each runs, once."""
    owner = await new_tenant(cluster, "redis-empty")
    _, key = await new_key(cluster, owner)
    agent_id = await _agent(cluster, owner, key)
    cluster.upstream.answers[TASK] = _decomposition()
    cluster.upstream.set_default("openai", Reply(text="done", usage=(5, 5)))
    headers = {"Authorization": f"Bearer {key}"}

    workers = [name for name, process in cluster.processes.items() if process.port is None]
    for name in workers:  # nobody takes the messages off the queue
        cluster.kill(name)
    waiting = [await _start(cluster, agent_id, key) for _ in range(2)]
    async with Redis.from_url(cluster.redis_url) as broker:  # published after the 202
        deadline = time.monotonic() + 10
        while not set(waiting) <= await ids_in_broker(broker):
            assert time.monotonic() < deadline, "the executions were never published"
            await asyncio.sleep(0.05)
    apis = ("api-a", "api-b")
    log_starts = {name: cluster.processes[name].log_path.stat().st_size for name in apis}
    await cluster.redis_down(keep_data=False)
    await cluster.redis_up()
    await cluster.heal()  # the workers again, on an empty queue
    async with cluster.http("api-b") as b:
        for execution_id in waiting:
            execution = await wait_final(b, execution_id, headers, 90)
            assert execution["state"] == "succeeded", execution
    logs = "".join(
        cluster.processes[name].log_path.read_bytes()[log_starts[name] :].decode(errors="replace")
        for name in apis
    )
    for execution_id in waiting:
        assert logs.count(f"execution {execution_id} has no message in the broker") == 1
    assert _plans_asked(cluster.upstream) == len(waiting)  # each planned once: run once

    # Limits are answered on both replicas at once: the connections the restart closed
    # (the counters' lane, the shared client's pool) are replaced, not failed on.
    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        changed = await a.patch("/api/v1/limits", headers=owner.headers, json={"key_rpm": 1000})
        assert changed.status_code == 200, changed.text
        for http in (a, b):
            answered = await http.post("/v1/chat/completions", headers=headers, json=CHAT)
            assert answered.status_code == 200, answered.text


async def _fanning_out(http: httpx.AsyncClient, execution_id: str, headers: dict[str, str]) -> None:
    """Until this execution's own sub-agents run. (Sub-agent calls in flight at the
    upstream may be an earlier test's execution, still finishing: taking those for this
    one's let a fault start while its message was still on its way to a worker.)"""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        execution = (await http.get(f"/api/v1/executions/{execution_id}", headers=headers)).json()
        if any(s["status"] == "running" for s in execution.get("subtasks", [])):
            return
        assert asyncio.get_running_loop().time() < deadline, f"never fanned out: {execution}"
        await asyncio.sleep(0.05)
