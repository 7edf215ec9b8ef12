"""Container lifecycle events for GetContainerEvents (the kubelet's evented PLEG).

Each event is rendered once, when it happens (the statuses the kubelet
needs are those of that moment: a deleted container's are gone later), by a
renderer the CRI layer installs, and the same object goes to every
subscriber. A subscriber's queue is bounded: a slow one loses its oldest
events (counted, so an operator sees it) and never holds up the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs

log = logging.getLogger(__name__)

EVENT_QUEUE = 1000  # per subscriber; a kubelet reads them as they come, and relists after a gap


class EventType(enum.Enum):
    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@attrs.frozen
class ContainerEvent:
    container_id: str
    sandbox_id: str
    type: EventType
    at: int  # ns since the epoch


class Subscription:
    def __init__(self, limit: int, on_drop: Callable[[], None]) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._limit = limit
        self._on_drop = on_drop
        self._wake = asyncio.Event()
        self.closed = False

    def put(self, item: Any) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self._on_drop()
        self._queue.append(item)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def items(self) -> AsyncIterator[Any]:
        """Until closed; what was queued before the close is still delivered."""
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self.closed:
                return
            self._wake.clear()
            await self._wake.wait()


class EventBus:
    def __init__(self, limit: int, on_drop: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self._on_drop = on_drop
        self._subscribers: set[Subscription] = set()
        self.render: Callable[[ContainerEvent], Any] = lambda event: event
        self.closed = False

    def publish(self, container_id: str, sandbox_id: str, type_: EventType) -> None:
        if not self._subscribers:
            return  # nobody listens: nothing rendered
        event = ContainerEvent(container_id, sandbox_id, type_, time.time_ns())
        try:
            item = self.render(event)
        except Exception:  # an event is never worth failing the operation that caused it
            log.exception("cannot render the %s event of container %s", type_.name, container_id)
            return
        for sub in self._subscribers:
            sub.put(item)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """Registered on entry (a stream can say it is listening before anything happens)."""
        sub = Subscription(self.limit, self._on_drop)
        if self.closed:
            sub.close()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """At shutdown: every stream ends, so the server can go idle."""
        self.closed = True
        for sub in self._subscribers:
            sub.close()

    def __len__(self) -> int:
        return len(self._subscribers)
