"""Whether the image records in memory are the store's, without reading the
store: every change of them (this daemon's, or `podrt image import`'s beside
it) writes into records/ (a record, the .generation token), and an inotify
watch on it, read by the loop, sees the write before the loop reads a request
sent after it. Look-ups then need no trip to a thread (CreateContainer, ImageStatus)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from podrt.host.inotify import DirWatch

log = logging.getLogger(__name__)

T = TypeVar("T")


class RecordsWatch:
    def __init__(self, records_dir: Path) -> None:
        self._dir = records_dir
        self._watch: DirWatch | None = None
        self._changes = 0  # writes into records/ seen
        self._fresh_at = -1  # _changes when the records were last read: equal, memory is the store

    def start(self) -> None:
        watch = DirWatch(self._dir, self._written)
        try:
            watch.start()
        except OSError as exc:  # no inotify instance left: every look-up reads the store in a thread
            log.warning("image store: cannot watch %s (%s); image look-ups read the store each time",
                        self._dir, exc.strerror or exc)
            return
        self._watch = watch

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def fresh(self) -> bool:
        return self._fresh_at == self._changes

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """fn (which reads the records again if they changed) in a thread; the
        records in memory are the store's after it, if no write was seen meanwhile."""
        seen = self._changes
        result = await asyncio.to_thread(fn, *args)
        if self._watch is not None and self._changes == seen:
            self._fresh_at = seen
        return result

    def _written(self, _name: str | None) -> None:
        self._changes += 1
