"""Server-Sent Events for numbered event streams (executions, document ingestion).

Each event goes out as `id: <seq>`, `event: <type>` and its JSON, so a client that drops
the connection resumes with `Last-Event-ID` (or `?after=`) from the last number it saw.
The producer yields batches of encoded events (whatever is ready at once goes out as one
write), or None for an idle interval, sent as a comment to keep proxies open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import orjson
from fastapi import Query
from fastapi.responses import StreamingResponse

from apiary.kit.schemas import INT32_MAX

HEARTBEAT_S = 15.0


class NumberedModel(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """One event with its JSON already encoded: encoded once, sent to every client."""

    seq: int
    type: str
    body: bytes

    @classmethod
    def of(cls, event: NumberedModel) -> EncodedEvent:
        return cls(event.seq, event.type, orjson.dumps(event.model_dump(mode="json")))

    def sse(self) -> bytes:
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.seq, self.type.encode(), self.body)


# `?after=`: the last sequence number a client saw. Sequence numbers are INTEGER columns.
After = Annotated[int | None, Query(ge=0, le=INT32_MAX, description="Last sequence number seen")]


def resume_point(after: int | None, last_event_id: str | None) -> int:
    """The last sequence number the client saw: `?after=` first, then `Last-Event-ID`
    (a header the browser echoes; one that is not a number resumes from the start)."""
    if after is not None:
        return after
    try:
        return min(max(int(last_event_id or 0), 0), INT32_MAX)
    except ValueError:
        return 0


class EventStreamResponse(StreamingResponse):
    """Names its media type, so the OpenAPI spec documents the stream's events under it
    (a route declares `response_class=EventStreamResponse`)."""

    media_type = "text/event-stream"


def event_stream_response(
    batches: AsyncIterator[Sequence[EncodedEvent] | None],
) -> EventStreamResponse:
    async def body() -> AsyncIterator[bytes]:
        async for batch in batches:
            if batch is None:
                yield b": keep-alive\n\n"
            elif batch:
                yield b"".join(event.sse() for event in batch)

    return EventStreamResponse(
        body(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
