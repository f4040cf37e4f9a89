"""Conversation memory: the next execution in a thread is given the earlier turns, and the
oldest are summarized once they pass the token limit."""

from __future__ import annotations

import pytest

from tests.fakes import Reply
from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.both_databases


def _user_prompt(swarm: Swarm, index: int) -> str:
    body = swarm.gateway.upstream.requests_for("openai")[index].body
    assert body is not None
    content: str = body["messages"][-1]["content"]
    return content


async def test_a_thread_remembers_earlier_turns(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script("openai", Reply(text="Your name is Ada."))
    first = await swarm.start("My name is Ada.", thread_id="t-1", options={"mode": "single"})
    assert (await swarm.wait(first["id"]))["state"] == "succeeded"
    second = await swarm.start("What is my name?", thread_id="t-1", options={"mode": "single"})
    assert (await swarm.wait(second["id"]))["state"] == "succeeded"
    prompt = _user_prompt(swarm, 1)
    assert "User: My name is Ada." in prompt
    assert "Assistant: Your name is Ada." in prompt
    assert prompt.endswith("What is my name?")
    # Another thread starts empty.
    third = await swarm.start("What is my name?", thread_id="t-2", options={"mode": "single"})
    await swarm.wait(third["id"])
    assert _user_prompt(swarm, 2) == "What is my name?"


async def test_old_turns_are_summarized_past_the_limit(swarm: Swarm) -> None:
    settings = swarm.gateway.runtime.settings.swarm
    settings.memory_token_limit = 100
    upstream = swarm.gateway.upstream
    long_answer = "word " * 120
    for turn in range(2):
        upstream.script("openai", Reply(text=f"answer {turn} {long_answer}"))
        started = await swarm.start(
            f"question {turn}", thread_id="long", options={"mode": "single"}
        )
        assert (await swarm.wait(started["id"]))["state"] == "succeeded"
    upstream.script("openai", Reply(text="SUMMARY: asked two questions"), Reply(text="ok"))
    started = await swarm.start("question 2", thread_id="long", options={"mode": "single"})
    assert (await swarm.wait(started["id"]))["state"] == "succeeded"
    summarize = upstream.requests_for("openai")[2].body
    assert summarize is not None
    assert "Summarize" in summarize["messages"][0]["content"]
    assert "question 0" in summarize["messages"][-1]["content"]
    prompt = _user_prompt(swarm, 3)
    assert "SUMMARY: asked two questions" in prompt
    assert "question 1" in prompt  # the newest turn is kept verbatim
    assert "answer 0" not in prompt  # the oldest only through the summary
