"""`apiary run` as a client of the API: finds the agent by name, follows the SSE stream,
prints progress and then the answer."""

from __future__ import annotations

import orjson
import pytest

from apiary.run_client import RunFailed, run_task
from tests.fakes import Reply
from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.both_databases


async def test_run_prints_progress_then_the_answer(swarm: Swarm) -> None:
    swarm.gateway.upstream.script(
        "openai", Reply(text=orjson.dumps({"subtasks": ["x", "y"]}).decode())
    )
    out: list[str] = []
    progress: list[str] = []
    swarm.http.headers.update(swarm.headers)
    status = await run_task(
        swarm.http,
        task="Plan a trip",
        agent="planner",
        max_agents=2,
        echo=out.append,
        progress=progress.append,
    )
    assert status == 0
    assert len(out) == 1
    assert out[0].startswith("echo: ")
    assert "planned 2 subtask(s)" in progress
    assert sum("sub-agent" in line and "succeeded" in line for line in progress) == 2
    assert progress[-1].startswith("succeeded: $")
    request = swarm.gateway.upstream.requests_for("openai")[0].body
    assert request is not None
    assert (
        request["response_format"]["json_schema"]["schema"]["properties"]["subtasks"]["maxItems"]
        == 2
    )


async def test_run_names_a_missing_agent(swarm: Swarm) -> None:
    swarm.http.headers.update(swarm.headers)
    with pytest.raises(RunFailed, match="no agent named 'ghost'"):
        await run_task(
            swarm.http, task="x", agent="ghost", max_agents=None, echo=print, progress=print
        )
