"""`apiary run`: submit a task through the HTTP API and follow it live over SSE.

It is an API client like any other (URL and key from flags or APIARY_URL /
APIARY_API_KEY), so it works against a remote Apiary as well as a local one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson

Echo = Callable[[str], None]


class RunFailed(Exception):
    pass


async def _agent_id(http: httpx.AsyncClient, agent: str) -> str:
    try:
        return str(uuid.UUID(agent))
    except ValueError:
        pass
    offset = 0
    while True:
        response = await http.get("/api/v1/agents", params={"limit": 200, "offset": offset})
        _check(response)
        page = response.json()
        for item in page["items"]:
            if item["name"] == agent:
                return str(item["id"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            raise RunFailed(f"no agent named {agent!r}")


def _check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            body = response.json()
            detail = f"{body.get('error')}: {body.get('detail')}"
        except ValueError:
            detail = response.text[:200]
        raise RunFailed(f"HTTP {response.status_code} {detail}")


def _progress(event: dict[str, Any], spent: float) -> str | None:
    data = event.get("data", {})
    kind = event.get("type")
    if kind == "state":
        return f"state: {data.get('state')}"
    if kind == "subtasks_planned":
        return f"planned {len(data.get('subtasks', []))} subtask(s)"
    if kind == "decomposition_degraded":
        return "plan unreadable: running the task as one subtask"
    if kind == "subagent_started":
        return f"  sub-agent {data.get('subtask', 0) + 1} started"
    if kind == "subagent_finished":
        return (
            f"  sub-agent {data.get('subtask', 0) + 1} {data.get('status')} "
            f"in {data.get('seconds', 0):.1f} s (cost so far ${spent:.6f})"
        )
    if kind == "subagent_retry":
        return f"  sub-agent {data.get('subtask', 0) + 1} failed, retrying"
    if kind == "tool_call":
        return f"  sub-agent {data.get('subtask', 0) + 1} used {data.get('tool')}"
    return None


async def run_task(
    http: httpx.AsyncClient,
    *,
    task: str,
    agent: str,
    max_agents: int | None,
    echo: Echo,
    progress: Echo,
) -> int:
    """Submit, follow, print the answer; the exit status (0 only when it succeeded)."""
    options: dict[str, Any] = {}
    if max_agents is not None:
        options["max_agents"] = max_agents
    body = {"agent_id": await _agent_id(http, agent), "task": task, "options": options}
    response = await http.post("/api/v1/executions", json=body)
    _check(response)
    execution_id = response.json()["id"]
    progress(f"execution {execution_id}")
    done: dict[str, Any] | None = None
    spent = 0.0
    last_seq = 0
    while done is None:  # reconnects resume after the last event seen
        async with http.stream(
            "GET", f"/api/v1/executions/{execution_id}/events", params={"after": last_seq}
        ) as stream:
            _check(stream)
            async for line in stream.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = orjson.loads(line[6:])
                last_seq = event["seq"]
                data = event.get("data", {})
                spent = float(data.get("spent_usd", spent))
                if event["type"] == "done":
                    done = data
                    break
                if (message := _progress(event, spent)) is not None:
                    progress(message)
    state = done.get("state")
    progress(f"{state}: ${float(done.get('cost_usd') or 0):.6f}")
    if done.get("answer"):
        echo(str(done["answer"]))
    if state != "succeeded":
        progress(f"error: {done.get('error') or state}")
        return 1
    return 0
