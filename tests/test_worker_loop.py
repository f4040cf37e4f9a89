"""A worker process's execution loop (`apiary.worker.process.ExecutionLoop`)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import NoSuchModuleError

from apiary.config import Settings
from apiary.worker.process import ExecutionLoop


def test_a_runtime_that_cannot_start_leaves_no_loop_thread_behind(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": "nosuchdialect://nowhere/apiary"})
    before = {thread.name for thread in threading.enumerate()}
    for _ in range(3):  # as each task of a worker whose database URL is wrong would
        with pytest.raises(NoSuchModuleError):
            ExecutionLoop(broken)
    assert {thread.name for thread in threading.enumerate()} == before
