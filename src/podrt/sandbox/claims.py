"""Pods made for RunPodSandbox callers that all went away: kept
`sandbox_claim_timeout` for the kubelet's retry with the same name, which
claims them; unclaimed, they are removed. The mark is persisted, so a restart
re-arms the timer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import attrs

from podrt.aio.tasks import TaskOwner
from podrt.errors import Unavailable
from podrt.state.records import SandboxState
from podrt.state.store import StateStore
from podrt.steps.sandbox.context import SandboxDeps

log = logging.getLogger(__name__)


class Claims:
    def __init__(self, deps: SandboxDeps, table: StateStore[SandboxState], tasks: TaskOwner, *,
                 remove: Callable[[str], Awaitable[None]]) -> None:
        self.deps, self._table, self._tasks, self._remove = deps, table, tasks, remove
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.expiring: set[str] = set()  # being removed unclaimed: a retry gets a new pod
        self._closed = False

    def mark_unclaimed(self, sandbox_id: str, unclaimed: bool) -> None:
        """Persisted, so a restart re-arms the claim timer. Written inline (a few
        ms, only for abandoned creations and their claims): this also runs while
        the daemon shuts down, when no new task may be started to do it."""
        state = self._table.find(sandbox_id)
        if state is None or state.unclaimed == unclaimed:
            return
        try:
            self._table.update_now(sandbox_id, lambda s: attrs.evolve(s, unclaimed=unclaimed))
        except OSError as exc:
            log.warning("cannot record the claim state of sandbox %s: %s", sandbox_id, exc)

    def arm(self, sandbox_id: str) -> None:
        if self._closed:  # shutting down: the flag on disk re-arms it at the next start
            return
        timeout = self.deps.config.runtime.sandbox_claim_timeout
        self._timers[sandbox_id] = asyncio.get_running_loop().call_later(timeout, self._expire, sandbox_id)

    def disarm(self, sandbox_id: str) -> None:
        timer = self._timers.pop(sandbox_id, None)
        if timer is not None:
            timer.cancel()

    def claim(self, sandbox_id: str) -> None:
        """A retry took the pod: it is the kubelet's now."""
        self.disarm(sandbox_id)
        self.mark_unclaimed(sandbox_id, False)

    def _expire(self, sandbox_id: str) -> None:
        self._timers.pop(sandbox_id, None)
        log.warning("sandbox %s was never claimed by a retry; removing it", sandbox_id)
        self.expiring.add(sandbox_id)  # from now on a retry gets a new pod
        try:
            self._tasks.spawn(self._remove_expired(sandbox_id), name=f"expire {sandbox_id}")
        except Unavailable:
            self.expiring.discard(sandbox_id)  # shutting down: restored (and judged) at next start

    async def _remove_expired(self, sandbox_id: str) -> None:
        try:
            await self._remove(sandbox_id)
        except Exception:
            log.exception("removing unclaimed sandbox %s failed; the kubelet or a restart will retry", sandbox_id)
        finally:
            self.expiring.discard(sandbox_id)

    def close(self) -> None:
        """At shutdown: unclaimed pods stay marked so; the next start re-arms their timers."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
