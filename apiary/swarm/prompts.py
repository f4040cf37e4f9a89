"""What the swarm tells the model: the orchestrator's, the sub-agents' and the synthesis's
prompts, and reading the orchestrator's plan back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from apiary.agents.schemas import AgentDefinition
from apiary.swarm.graph import SubtaskResult

DECOMPOSE_PROMPT = (
    "You are the orchestrator of a team of up to {n} sub-agents working in parallel. "
    "Split the user's task into independent subtasks, each a self-contained instruction "
    "a sub-agent can carry out alone. Use as few subtasks as the task needs (at most {n}). "
    'Answer only with JSON: {{"subtasks": ["...", "..."]}}.'
)
SUBAGENT_PROMPT = (
    "You are a sub-agent in a team. Carry out your subtask and answer with the result "
    "only; other sub-agents handle the rest of the task. When you use a passage from "
    "knowledge_search, cite it as [n] with its source (file, page or section)."
)
SYNTHESIZE_PROMPT = (
    "Combine the sub-agents' results into one answer to the user's task. If some "
    "subtasks failed, answer from what succeeded and say plainly what is missing. "
    "Keep the sub-agents' citations: every [n] marker with its source stays next to the "
    "fact it supports."
)
SUMMARIZE_PROMPT = (
    "Summarize this conversation in a few sentences, keeping facts, names, numbers and decisions."
)


def system_prompt(agent: AgentDefinition, role_prompt: str) -> str:
    """The agent's own system prompt, if it has one, before the role's."""
    return f"{agent.system_prompt}\n\n{role_prompt}" if agent.system_prompt else role_prompt


def with_background(background: str, text: str) -> str:
    """`text` after the run's background (inputs and the thread's memory), if any."""
    return f"{background}\n\n{text}" if background else text


def decomposition_schema(max_agents: int) -> dict[str, Any]:
    """The JSON schema the orchestrator answers in (structured output)."""
    return {
        "type": "object",
        "properties": {
            "subtasks": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 300},
                "minItems": 1,
                "maxItems": max_agents,
            }
        },
        "required": ["subtasks"],
        "additionalProperties": False,
    }


def parse_subtasks(text: str, limit: int) -> list[str] | None:
    """The subtask list from the orchestrator's JSON, or None when it cannot be read."""
    candidate = text.strip()
    fenced = re.search(r"\{.*\}", candidate, re.DOTALL)
    if fenced:
        candidate = fenced.group(0)
    try:
        document = orjson.loads(candidate)
    except orjson.JSONDecodeError:
        return None
    items = document.get("subtasks") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return None
    prompts = [str(item).strip() for item in items if isinstance(item, str) and item.strip()]
    return prompts[:limit] or None


def synthesis_request(task: str, ordered: Sequence[SubtaskResult]) -> str:
    """The synthesis's user message: the task, then each sub-agent's result or failure, in
    index order."""
    sections = [
        f"Subtask {r['index'] + 1} result:\n{r['result']}"
        if r["status"] == "succeeded"
        else f"Subtask {r['index'] + 1} FAILED: {r['error']}"
        for r in ordered
    ]
    return f"Task: {task}\n\n" + "\n\n".join(sections)
