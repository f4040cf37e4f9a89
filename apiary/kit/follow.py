"""Following a numbered event stream live: an execution's events, a document's ingestion.

The database is the record; notifications only say "look again", and may carry the new
events themselves. `follow` reads the record to catch up, then passes on what the
notifications carry while they follow on from the last number sent, and goes back to the
record when one is missing, when a notification came without its events, or after an
idle interval. It yields batches (whatever is ready at once) or None for an idle interval
(a keep-alive), and ends at the stream's last event or when its subject is finished or gone.
Used by the SSE and WebSocket endpoints of executions and knowledge alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from apiary.kit.notify import Notifier
from apiary.kit.sse import HEARTBEAT_S, EncodedEvent

SETTLE_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class Read:
    """One read of the record: the events after a number, and the subject's state."""

    events: Sequence[EncodedEvent]
    finished: bool  # the subject is in a final state
    full: bool = False  # a whole page: more are waiting


async def follow(
    notifier: Notifier,
    channel: str,
    read: Callable[[int], Awaitable[Read | None]],
    after: int,
    *,
    carried: Callable[[bytes], list[EncodedEvent] | None] | None = None,
    is_last: Callable[[EncodedEvent], bool] | None = None,
    settle_waits: int = 0,
) -> AsyncIterator[list[EncodedEvent] | None]:
    """The events after `after`, live, until the last one.

    `read(after)` reads the record (None: the subject is gone, which ends the stream).
    `carried(message)` unpacks the events a notification carries (None if it is not one).
    `is_last(event)` marks the stream's last event, which ends it. `settle_waits`: when the
    subject is finished but its last events may still be on their way (an execution's
    final state is saved just before its last events), how many short waits without new
    events to allow before ending; with 0 the stream ends at the first read that finds the
    subject finished and nothing more to send.
    """
    waits_left = settle_waits
    finished = False
    from_record = True  # read the record next (else take what the notifications carry)
    received: list[EncodedEvent] = []
    async with notifier.listen(channel) as listener:
        while True:
            batch: list[EncodedEvent] = []
            if from_record:
                page = await read(after)
                if page is None:
                    return
                finished = page.finished
                batch = list(page.events)
                from_record = page.full
                exhausted = not page.full
            else:
                exhausted = False
                for event in received:
                    if event.seq <= after:
                        continue  # sent already (read, or received twice)
                    if event.seq != after + 1:
                        from_record = True  # one is missing: the record has it
                        break
                    batch.append(event)
                    after = event.seq
            if batch:
                after = batch[-1].seq
                last = None
                if is_last is not None:
                    last = next((i for i, event in enumerate(batch) if is_last(event)), None)
                yield batch if last is None else batch[: last + 1]
                if last is not None:
                    return
            if from_record:
                continue
            if finished:
                if settle_waits == 0 and exhausted:
                    return
                # A wake-up that brought events does not count against the waits.
                if not batch:
                    waits_left -= 1
                if waits_left < 0:
                    return
                woke = await listener.wait(SETTLE_WAIT_S)
            else:
                woke = await listener.wait(HEARTBEAT_S)
                if not woke:
                    yield None
            messages = listener.take()
            if not woke or messages is None or carried is None:
                from_record = True  # idle (look at the state again), or nothing carried
                continue
            unpacked = [carried(message) for message in messages]
            if any(events is None for events in unpacked):
                from_record = True  # one was not a message of events: something was missed
                continue
            received = [event for events in unpacked for event in events or ()]
