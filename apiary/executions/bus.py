"""The names of an execution's notification channels (`apiary.kit.notify` carries them)."""

from __future__ import annotations


def events_channel(execution_id: object) -> str:
    return f"execution:{execution_id}:events"


def cancel_channel(execution_id: object) -> str:
    return f"execution:{execution_id}:cancel"
