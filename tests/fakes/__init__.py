"""Local stand-ins for external services, speaking their real wire protocols."""

from tests.fakes.upstream import (
    DEFAULT_API_KEY,
    Behaviour,
    Drop,
    Endpoint,
    Fail,
    FakeUpstream,
    Family,
    RecordedRequest,
    Reply,
    Slow,
    StreamThenDrop,
    ToolCall,
    embedding_for,
    fake_upstream,
)

__all__ = [
    "DEFAULT_API_KEY",
    "Behaviour",
    "Drop",
    "Endpoint",
    "Fail",
    "FakeUpstream",
    "Family",
    "RecordedRequest",
    "Reply",
    "Slow",
    "StreamThenDrop",
    "ToolCall",
    "embedding_for",
    "fake_upstream",
]
