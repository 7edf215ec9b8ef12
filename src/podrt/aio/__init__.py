"""asyncio helpers for work that must not be cut short by a cancelled RPC."""

from __future__ import annotations

import _thread
import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


async def await_shielded(fut: asyncio.Future[Any]) -> bool:
    """Wait for `fut` however often we are cancelled meanwhile; return whether we were."""
    cancelled = False
    while True:
        try:
            await asyncio.shield(fut)
            return cancelled
        except asyncio.CancelledError:
            if fut.cancelled():  # the work itself was cancelled (e.g. loop shutdown)
                raise
            cancelled = True


async def finish_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Blocking file work (fsyncs) off the event loop, so Status and List stay
    quick while pods are made. A cancel waits for the work to finish first: a
    write must never land after the caller's cleanup."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    if await await_shielded(fut):
        raise asyncio.CancelledError
    return fut.result()


async def finish_in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """finish_in_thread on a thread of its own, for work that blocks on the
    loop's progress (an unpack reading a download): in the shared executor
    it could hold every worker while the writes it waits for queue behind it;
    or that changes the thread's namespaces (a pod's netns), which no pooled
    thread may. Started with _thread, not threading.Thread: Thread.start waits
    until the new thread has run, and the loop's thread (at loop_nice) then stood
    still until a nice-0 thread got a CPU, 1-10 ms under 10 concurrent pod
    cycles, twice a pod (issue 20). Such a thread is unnamed and never joined
    (as a daemon thread): the caller awaits its end anyway."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(error) if error is not None else fut.set_result(result)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    _thread.start_new_thread(run, ())
    if await await_shielded(fut):
        raise asyncio.CancelledError
    return fut.result()


class SharedTask(Generic[T]):
    """One piece of work awaited by several callers (two pulls of one layer).
    It is cancelled only when its last waiter leaves, and that waiter returns
    only once the work has unwound (no partial file outlives the call)."""

    def __init__(self, coro: Coroutine[Any, Any, T], name: str) -> None:
        self._task: asyncio.Task[T] = asyncio.get_running_loop().create_task(coro, name=name)
        self._waiters = 0
        self._abandoned = False

    def done(self) -> bool:
        """Finished, or being cancelled because everyone left: a newcomer starts afresh."""
        return self._abandoned or self._task.done()

    def add_done_callback(self, callback: Callable[[asyncio.Task[T]], object]) -> None:
        self._task.add_done_callback(callback)

    async def wait(self) -> T:
        self._waiters += 1
        try:
            return await asyncio.shield(self._task)
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not self._task.done():
                self._abandoned = True
                self._task.cancel()
                await self._unwound()

    async def _unwound(self) -> None:
        """Wait out the abandoned work, a second cancel included (the leaving
        waiter's own exception propagates after), and take its outcome: work
        cancelled while it was failing anyway (one of two bad layers, after the
        other failed the pull) ends in its error, which nobody else awaits and
        asyncio would log as "Task exception was never retrieved"."""
        while not self._task.done():
            try:
                await asyncio.wait({self._task})
            except asyncio.CancelledError:
                continue
        if not self._task.cancelled() and (exc := self._task.exception()) is not None:
            log.debug("%s, abandoned by its callers, failed too: %s", self._task.get_name(), exc)


class Recent(Generic[T]):
    """What `produce` made, reused for `period` seconds (counted from the start
    of the pass that made it); callers arriving while a pass runs share that
    pass (SharedTask), so N concurrent callers cost one."""

    def __init__(self, produce: Callable[[], Coroutine[Any, Any, T]], period: float, name: str) -> None:
        self._produce, self._period, self._name = produce, period, name
        self._made: tuple[float, T] | None = None
        self._pass: SharedTask[T] | None = None

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        if self._made is not None and loop.time() - self._made[0] < self._period:
            return self._made[1]
        if self._pass is None or self._pass.done():
            self._pass = SharedTask(self._make(loop.time()), self._name)
        return await self._pass.wait()

    async def _make(self, started: float) -> T:
        value = await self._produce()
        self._made = (started, value)
        return value
