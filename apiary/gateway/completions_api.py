"""`POST /v1/completions`: OpenAI's legacy completions API (prompt in, text out).

Each prompt is sent as one user message through the gateway's chat call
(`runtime.client.chat`: routing, fallback, cache, limits, budgets, ledger), and the chat
answer comes back as a `text_completion`, or as `text_completion` chunks when streamed.
What a chat model cannot do here (echoing the prompt, a suffix to fill in, token
log-probabilities, token-array prompts) is a 400 that says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apiary.auth.context import AuthContext
from apiary.errors import BadRequest
from apiary.gateway.client import ChatReply, ChatStream
from apiary.gateway.responses_wire import new_item_id
from apiary.runtime import Runtime

# OpenAI's default for this API (and vLLM's): a completion is short unless asked otherwise.
DEFAULT_MAX_TOKENS = 16
# Chat parameters that mean the same on this API and pass through unchanged.
_PASSED = (
    "n", "stop", "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed",
    "user", "logit_bias", "stream", "stream_options", "cache",
)  # fmt: skip
_KNOWN = frozenset({"model", "prompt", "max_tokens", "echo", "suffix", "logprobs", "best_of"})
_MAX_PROMPTS = 64


def check(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if type(prompt) is list and prompt and all(type(p) is str for p in prompt):
        if len(prompt) > _MAX_PROMPTS:
            raise BadRequest(f"prompt: at most {_MAX_PROMPTS} prompts in one request")
    elif type(prompt) is list:
        raise BadRequest(
            "prompt: token-array prompts are not supported (the gateway serves chat models); "
            "send a string or a list of strings"
        )
    elif type(prompt) is not str:
        raise BadRequest("prompt: required, a string or a list of strings")
    if body.get("echo"):
        raise BadRequest("echo: returning the prompt with the completion is not supported")
    if body.get("suffix") is not None:
        raise BadRequest(
            "suffix: fill-in-the-middle is not supported (the gateway serves chat models)"
        )
    if body.get("logprobs") is not None:
        raise BadRequest("logprobs: token log-probabilities are not supported on completions")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise BadRequest("best_of: only 1 is supported; use n for several completions")
    unknown = sorted(set(body) - _KNOWN - set(_PASSED))
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise BadRequest("max_tokens: must be a positive integer")
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise BadRequest("stream: must be true or false")
    if stream and type(prompt) is list and len(prompt) > 1:
        raise BadRequest("stream: streaming takes one prompt; send the prompts one by one")


def _chat(body: dict[str, Any], prompt: str) -> dict[str, Any]:
    chat = {
        "model": body["model"],
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    chat.update({name: body[name] for name in _PASSED if body.get(name) is not None})
    return chat


async def create(
    runtime: Runtime, auth: AuthContext, body: dict[str, Any], headers: dict[str, str], t: float
) -> ChatReply | ChatStream:
    prompt = body["prompt"]
    prompts = prompt if type(prompt) is list else [prompt]
    cache = headers.get("x-apiary-cache")
    identifier = new_item_id("cmpl").replace("_", "-")
    replies = await asyncio.gather(
        *(runtime.client.chat(auth, _chat(body, p), cache_header=cache, started=t) for p in prompts)
    )
    if isinstance(replies[0], ChatStream):  # `stream` (one prompt: see `check`)
        stream = replies[0]
        return ChatStream(headers=stream.headers, chunks=_chunks(identifier, stream.chunks))
    choices: list[dict[str, Any]] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    model = body["model"]
    for number, reply in enumerate(replies):
        assert isinstance(reply, ChatReply)  # streams are answered above
        completion = reply.json()
        model = completion.get("model") or model
        answers = completion.get("choices") or []
        for choice in answers:
            message = choice.get("message") or {}
            choices.append(
                {
                    "text": message.get("content") or "",
                    "index": number * len(answers) + int(choice.get("index", 0)),
                    "logprobs": None,
                    "finish_reason": choice.get("finish_reason"),
                }
            )
        for name in usage:
            usage[name] += int((completion.get("usage") or {}).get(name) or 0)
    document = {
        "id": identifier,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }
    return ChatReply(orjson.dumps(document), headers=replies[0].headers)


async def _chunks(identifier: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    created = int(time.time())
    try:
        async for raw in chunks:
            chunk = orjson.loads(raw)
            if "error" in chunk:  # the provider broke off: passed on as chat streams do
                yield raw
                continue
            choices = []
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content") or ""
                if text or choice.get("finish_reason"):
                    choices.append(
                        {
                            "text": text,
                            "index": int(choice.get("index", 0)),
                            "logprobs": None,
                            "finish_reason": choice.get("finish_reason"),
                        }
                    )
            usage = chunk.get("usage")
            if not choices and not usage:
                continue  # the role chunk: no text yet
            completion: dict[str, Any] = {
                "id": identifier,
                "object": "text_completion",
                "created": created,
                "model": chunk.get("model", ""),
                "choices": choices,
            }
            if usage:
                completion["usage"] = {
                    name: usage.get(name, 0)
                    for name in ("prompt_tokens", "completion_tokens", "total_tokens")
                }
            yield orjson.dumps(completion)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
