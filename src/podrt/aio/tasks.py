"""Work the daemon owns, so that a cancelled RPC does not cancel it.

grpclib cancels a handler when the client's deadline passes or the stream is
reset; creations therefore run in tasks owned here, and handlers only await
them through asyncio.shield. At shutdown the daemon waits for them (bounded),
then cancels the rest, which makes their transactions roll back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from podrt.errors import SHUTTING_DOWN, Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


class TaskOwner:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        if self.closed:
            coro.close()
            raise Unavailable(SHUTTING_DOWN)
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Let owned work finish for up to `timeout` seconds, then cancel it and
        wait for the cancellations (rollbacks) to complete."""
        self.closed = True
        if not self._tasks:
            return
        log.info("waiting up to %.0fs for %d in-flight operation(s)", timeout, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d operation(s) still running at shutdown; rolling back", len(pending))
            await asyncio.wait(pending)
