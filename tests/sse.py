"""Reading a Server-Sent Events body in tests: one dict per event, comments skipped."""

from __future__ import annotations

from typing import Any

import orjson


def parse_sse(text: str) -> list[dict[str, Any]]:
    """`{"id": seq, "event": type, **data}` per event of an event-stream body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], **orjson.loads(fields["data"])}
            )
    return events
