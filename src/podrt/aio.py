"""asyncio helpers for work that must not be cut short by a cancelled RPC."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

T = TypeVar("T")


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
