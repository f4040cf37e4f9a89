"""Row ids: UUIDv7, so rows made one after another sit side by side in an index."""

from __future__ import annotations

import time
import uuid

from apiary.db import new_id


def test_a_new_id_is_a_uuid7_stamped_with_the_time_it_was_made() -> None:
    before_ms = time.time_ns() // 1_000_000
    made = new_id()
    after_ms = time.time_ns() // 1_000_000

    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before_ms <= made.int >> 80 <= after_ms  # the leading 48 bits: Unix milliseconds


def test_ids_sort_in_the_order_they_were_made_and_never_repeat() -> None:
    made = [new_id() for _ in range(50_000)]

    assert made == sorted(made)
    assert len(set(made)) == len(made)
    # The text form (what SQLite stores, what the API returns) sorts the same way.
    assert [str(one) for one in made] == sorted(str(one) for one in made)
