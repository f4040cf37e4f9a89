"""Server-Sent Events for numbered event streams (executions, document ingestion).

Each event goes out as `id: <seq>`, `event: <type>` and its JSON, so a client that drops
the connection resumes with `Last-Event-ID` (or `?after=`) from the last number it saw.
The producer yields None for an idle interval, sent as a comment to keep proxies open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson
from fastapi.responses import StreamingResponse

HEARTBEAT_S = 15.0


class NumberedEvent(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


def resume_point(after: int | None, last_event_id: str | None) -> int:
    """The last sequence number the client saw: `?after=` first, then `Last-Event-ID`."""
    if after is not None:
        return after
    try:
        return max(int(last_event_id or 0), 0)
    except ValueError:
        return 0


class EventStreamResponse(StreamingResponse):
    """Names its media type, so the OpenAPI spec documents the stream's events under it
    (a route declares `response_class=EventStreamResponse`)."""

    media_type = "text/event-stream"


def event_stream_response(events: AsyncIterator[NumberedEvent | None]) -> EventStreamResponse:
    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            if event is None:
                yield b": keep-alive\n\n"
                continue
            data = orjson.dumps(event.model_dump(mode="json"))
            yield f"id: {event.seq}\nevent: {event.type}\n".encode() + b"data: " + data + b"\n\n"

    return EventStreamResponse(
        body(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
