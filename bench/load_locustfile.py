"""The request mix of the load and soak profiles (bench/load.py), for Locust.

Runs in bench/.load-venv (Locust's own venv), never imports Apiary; bench/load.py seeds the
tenant and passes what the users need in the JSON file `APIARY_LOAD_CONFIG` names. Each
simulated person sends to one of the two replicas (alternately assigned: there is no
balancer), paced by `constant_throughput` so the users together send the profile's rate.
A person keeps to one replica, as a client behind a balancer with sticky connections
does: switching at random left connections idle past uvicorn's 5 s keep-alive, and a
POST sent as the server closed its idle connection failed with status 0 (the client's
race, not the server's fault).

The mix: dashboard reads (executions, one execution, usage summary and series, agents),
`/v1/chat/completions` through the gateway (a quarter of them streamed), and swarm
executions of 2 or 3 sub-agents, each followed over SSE from the other replica by a
watcher in the background, as a dashboard tab follows one. A chat call's reported time is
the call's time minus the fake upstream's delay for it (the model's share, known from the
message's text: tests/topology/harness.py `text_delay`), so p95 is what Apiary adds; an
SSE watcher's reported time is until the stream opens. Watchers that did not see `done`
are failures; what they saw goes to the JSON file `APIARY_LOAD_WATCHERS` names.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
import zlib
from typing import Any

import gevent
import requests
from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment

with open(os.environ["APIARY_LOAD_CONFIG"]) as _file:
    CONFIG: dict[str, Any] = json.load(_file)
HOSTS: list[str] = CONFIG["hosts"]
KEY_HEADERS = {"Authorization": f"Bearer {CONFIG['api_key']}"}
DASHBOARD_HEADERS = {"Authorization": f"Bearer {CONFIG['token']}"}
LOW, HIGH = CONFIG["upstream_delay_s"]
WATCH_TIMEOUT_S = 60.0
MAX_WATCHERS = int(CONFIG.get("max_watchers", 400))
# Each execution created opens one SSE stream, counted as a request too (its opening):
# the tasks' pace leaves room for them, so that all requests together make the rate.
CREATE_WEIGHT, TOTAL_WEIGHT = 8, 100

# Executions created so far (ids), for the reads of one execution; the last few suffice.
_recent: list[str] = []
_watchers = {"started": 0, "done": 0, "incomplete": 0, "skipped": 0, "states": {}}
_follow_s: list[float] = []
_active = threading.BoundedSemaphore(MAX_WATCHERS)
_assigned = 0  # users started so far, to alternate the replicas


def text_delay(text: str) -> float:
    # The same pick as tests/topology/harness.py text_delay (this venv cannot import it).
    return LOW + (HIGH - LOW) * zlib.crc32(text.encode()) / 0xFFFFFFFF


def _why(response: Any) -> str:
    # Status 0: no HTTP answer at all; the client's error says what happened instead.
    if response.status_code == 0:
        return f"no response: {response.error!r}"
    return f"{response.status_code}: {(response.text or '')[:200]}"


def _fire(environment: Environment, name: str, started: float, error: Exception | None) -> None:
    environment.events.request.fire(
        request_type="SSE",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=error,
        context={},
    )


def _follow(environment: Environment, host: str, execution_id: str) -> None:
    """Follow one execution's events to `done` (or the timeout), as the dashboard does."""
    started = time.perf_counter()
    opened = False
    try:
        with requests.get(
            f"{host}/api/v1/executions/{execution_id}/events",
            headers=DASHBOARD_HEADERS,
            stream=True,
            timeout=(10, WATCH_TIMEOUT_S),
        ) as response:
            response.raise_for_status()
            opened = True
            _fire(environment, "/api/v1/executions/{id}/events (open)", started, None)
            event = ""
            for raw in response.iter_lines():
                line = raw.decode()
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "done":
                    state = str(json.loads(line[6:]).get("data", {}).get("state", "?"))
                    states = _watchers["states"]
                    states[state] = states.get(state, 0) + 1
                    _watchers["done"] += 1
                    _follow_s.append(time.perf_counter() - started)
                    return
                if time.perf_counter() - started > WATCH_TIMEOUT_S:
                    break
        raise RuntimeError("the stream ended before its done event")
    except Exception as error:  # every failure is a failed watch
        _watchers["incomplete"] += 1
        name = (
            "/api/v1/executions/{id}/events (follow)"
            if opened
            else "/api/v1/executions/{id}/events (open)"
        )
        _fire(environment, name, started, error)
    finally:
        _active.release()


class Tenant(FastHttpUser):
    """One person of the tenant: the dashboard open, an app calling the gateway."""

    host = HOSTS[0]
    wait_time = constant_throughput(CONFIG["per_user_rate"] / (1 + CREATE_WEIGHT / TOTAL_WEIGHT))
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        global _assigned
        self.replica = HOSTS[_assigned % len(HOSTS)]
        self.other = HOSTS[(_assigned + 1) % len(HOSTS)]
        _assigned += 1

    def _url(self, path: str) -> str:
        return self.replica + path

    # -- dashboard reads ---------------------------------------------------------------

    @task(20)
    def list_executions(self) -> None:
        self.client.get(
            self._url("/api/v1/executions?limit=20"),
            headers=DASHBOARD_HEADERS,
            name="/api/v1/executions",
        )

    @task(8)
    def get_execution(self) -> None:
        if not _recent:
            return self.list_executions()
        self.client.get(
            self._url(f"/api/v1/executions/{random.choice(_recent)}"),
            headers=DASHBOARD_HEADERS,
            name="/api/v1/executions/{id}",
        )

    @task(8)
    def usage_summary(self) -> None:
        self.client.get(
            self._url("/api/v1/usage/summary"),
            headers=DASHBOARD_HEADERS,
            name="/api/v1/usage/summary",
        )

    @task(6)
    def usage_series(self) -> None:
        self.client.get(
            self._url("/api/v1/usage/series?group_by=model&bucket=day"),
            headers=DASHBOARD_HEADERS,
            name="/api/v1/usage/series",
        )

    @task(10)
    def list_agents(self) -> None:
        self.client.get(
            self._url("/api/v1/agents"), headers=DASHBOARD_HEADERS, name="/api/v1/agents"
        )

    # -- the gateway ---------------------------------------------------------------------

    def _chat(self, *, stream: bool) -> None:
        text = f"load {uuid.uuid4().hex}"
        body: dict[str, Any] = {
            "model": CONFIG["chat_model"],
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 32,
        }
        if stream:
            body["stream"] = True
        name = "/v1/chat/completions (stream, added)" if stream else "/v1/chat/completions (added)"
        with self.client.post(
            self._url("/v1/chat/completions"),
            json=body,
            headers=KEY_HEADERS,
            name=name,
            catch_response=True,
        ) as response:
            # What Apiary adds: the call's time less the upstream's delay for this text.
            measured = response.request_meta["response_time"]
            response.request_meta["response_time"] = max(0.0, measured - text_delay(text) * 1000)
            if response.status_code != 200:
                response.failure(_why(response))
            elif stream and "data: [DONE]" not in (response.text or ""):
                response.failure("the stream ended without [DONE]")

    @task(30)
    def chat(self) -> None:
        self._chat(stream=False)

    @task(10)
    def chat_stream(self) -> None:
        self._chat(stream=True)

    # -- swarms --------------------------------------------------------------------------

    @task(CREATE_WEIGHT)
    def create_execution(self) -> None:
        agent = random.choice(CONFIG["swarm_agents"])
        with self.client.post(
            self._url("/api/v1/executions"),
            json={"agent_id": agent["id"], "task": agent["task"]},
            headers=KEY_HEADERS,
            name="/api/v1/executions (create)",
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(_why(response))
                return
            execution_id = str(response.json()["id"])
        _recent.append(execution_id)
        del _recent[:-50]
        if not _active.acquire(blocking=False):
            _watchers["skipped"] += 1  # enough tabs open already
            return
        _watchers["started"] += 1
        gevent.spawn(_follow, self.environment, self.other, execution_id)


@events.quitting.add_listener
def _write_watchers(environment: Environment, **_: Any) -> None:
    follow = sorted(_follow_s)
    summary = dict(_watchers)
    if follow:
        summary["follow_p50_s"] = follow[len(follow) // 2]
        summary["follow_p95_s"] = follow[min(len(follow) - 1, int(len(follow) * 0.95))]
    path = os.environ.get("APIARY_LOAD_WATCHERS")
    if path:
        with open(path, "w") as file:
            json.dump(summary, file)
