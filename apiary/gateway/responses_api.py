"""`POST /v1/responses`: OpenAI's Responses API, served for every provider kind.

The request is translated to a chat-completions body (apiary/gateway/responses_wire.py)
and made through the same gateway call as `/v1/chat/completions` (`runtime.client.chat`),
so routing, fallback, the cache, limits, budgets and the ledger are the chat call's. Its
answer, or its chunks, come back as a `response` object or the typed event stream. With
`store` (the default, as at OpenAI) the response and its conversation are saved for the
tenant (apiary/responses/), which is what `previous_response_id` continues.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apiary.auth.context import AuthContext
from apiary.db import new_id
from apiary.gateway.client import ChatReply, ChatStream
from apiary.gateway.responses_wire import (
    EventStream,
    Item,
    ResponsesRequest,
    base_document,
    chat_body,
    completed_document,
    parse_request,
    response_id,
)
from apiary.responses.service import response_service
from apiary.runtime import Runtime


def check(body: dict[str, Any]) -> None:
    """The hot path's body check: the full parse happens in `create` (it is all needed)."""


async def create(
    runtime: Runtime, auth: AuthContext, body: dict[str, Any], headers: dict[str, str], t: float
) -> ChatReply | ChatStream:
    request = parse_request(body)
    history: list[Item] = []
    if request.previous_response_id is not None:
        history = await response_service.conversation(runtime, auth, request.previous_response_id)
    chat = chat_body(request, history)
    reply = await runtime.client.chat(
        auth, chat, cache_header=headers.get("x-apiary-cache"), started=t
    )
    key = new_id()
    base = base_document(
        request, identifier=response_id(key), created_at=int(time.time()), model=request.model
    )
    context = [*history, *request.items]
    if isinstance(reply, ChatStream):
        events = _events(runtime, auth, request, key, EventStream(base), reply, context)
        return ChatStream(headers=reply.headers, chunks=events, framed=True)
    document = completed_document(base, reply.json())
    if request.store:
        response_service.save(runtime, auth, key=key, document=document, context=context)
    return ChatReply(orjson.dumps(document), headers=reply.headers)


async def _events(
    runtime: Runtime,
    auth: AuthContext,
    request: ResponsesRequest,
    key: uuid.UUID,
    translator: EventStream,
    stream: ChatStream,
    context: list[Item],
) -> AsyncIterator[bytes]:
    chunks = stream.chunks
    try:
        for event in translator.open():
            yield event
        async for raw in chunks:
            chunk = orjson.loads(raw)
            problem = chunk.get("error")
            if problem is not None:  # the provider broke off (see client._stream)
                for event in translator.fail("server_error", str(problem.get("message"))):
                    yield event
                break
            for event in translator.feed(chunk):
                yield event
        else:
            for event in translator.close():
                yield event
    finally:
        # Closing the chat stream settles its ledger entry and budget now, also when the
        # client hangs up midway.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if request.store:
        response_service.save(runtime, auth, key=key, document=translator.document, context=context)
