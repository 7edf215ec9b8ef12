"""aio.finish_in_own_thread: the work's result or error, on a thread of its
own, a cancel waited out, and the loop never waiting for that thread to start."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from podrt.aio import finish_in_own_thread


async def test_the_result_and_the_error_come_back_from_a_thread_of_its_own() -> None:
    loop_thread = threading.get_ident()
    result, ident = await finish_in_own_thread(lambda a, b: (a + b, threading.get_ident()), 2, 3)
    assert result == 5 and ident != loop_thread

    def fails() -> None:
        raise OSError(5, "the disk")

    with pytest.raises(OSError, match="the disk"):
        await finish_in_own_thread(fails)


async def test_a_cancel_waits_for_the_work_to_end() -> None:
    go, done = threading.Event(), threading.Event()

    def work() -> None:
        go.wait(10)
        done.set()

    task = asyncio.ensure_future(finish_in_own_thread(work))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the work
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done.is_set()


async def test_the_loop_never_waits_for_the_thread_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """threading.Thread.start waits until the new thread has run: under load the
    loop's thread stood still until a nice-0 thread got a CPU (issue 20)."""
    starts: list[int] = []
    real = threading.Thread.start

    def spy(self: threading.Thread, *args: Any) -> None:
        starts.append(threading.get_ident())
        real(self, *args)

    monkeypatch.setattr(threading.Thread, "start", spy)
    assert await finish_in_own_thread(lambda: 7) == 7
    assert threading.get_ident() not in starts
