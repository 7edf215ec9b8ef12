"""One store per kind of object (pods, containers), as containerd's: the
records in memory, each also in `<dir>/<id>/state.json`, the ID index for
prefix lookups, and a lock per ID.

A record is frozen: reads never write. A change is `update(id, fn)`: `fn`
makes the new record from the current one, the file is written whole
(atomic_write), then the new record replaces the old in memory; updates of
one ID are serialized, so none is lost. A failed write changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic

from podrt.aio import await_shielded
from podrt.errors import NotFound
from podrt.host.fsutil import atomic_write
from podrt.state.format import R, RecordFormat
from podrt.state.idindex import IdIndex

STATE_FILE = "state.json"


def write_record(path: Path, fmt: RecordFormat[R], record: R) -> None:
    """Blocking: the record's file, whole (creation's last step writes it so)."""
    atomic_write(path, fmt.encode(record))


class StateStore(Generic[R]):
    def __init__(self, directory: Path, fmt: RecordFormat[R], what: str) -> None:
        self.directory = directory
        self.format: RecordFormat[R] = fmt
        self.what = what  # in messages: "pod sandbox", "container"
        self.ids = IdIndex()  # creation indexes an ID before its record is added (steps.names.IndexId)
        self._records: dict[str, R] = {}  # in the order they came: List answers so
        self._locks: dict[str, asyncio.Lock] = {}
        self._writing: dict[str, asyncio.Lock] = {}

    def path(self, object_id: str) -> Path:
        return self.directory / object_id / STATE_FILE

    # ---- reads: never write ----------------------------------------------------------

    def get(self, object_id: str) -> R:
        record = self._records.get(object_id)
        if record is None:
            raise NotFound(f"{self.what} {object_id} not found")
        return record

    def find(self, object_id: str) -> R | None:
        return self._records.get(object_id)

    def resolve(self, id_prefix: str) -> str:
        """The full ID of an indexed object a unique prefix names."""
        return self.ids.get(id_prefix)

    def records(self) -> list[R]:
        return list(self._records.values())

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def read_all(self) -> tuple[list[R], list[tuple[Path, str]]]:
        """Blocking, at start: every readable record on disk (memory untouched),
        and (path, problem) for the rest."""
        found: list[R] = []
        bad: list[tuple[Path, str]] = []
        if not self.directory.is_dir():
            return found, bad
        for state_file in sorted(self.directory.glob(f"*/{STATE_FILE}")):
            try:
                found.append(self.format.decode(state_file.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                bad.append((state_file, f"{type(exc).__name__}: {exc}"))
        return found, bad

    # ---- changes --------------------------------------------------------------------

    def lock(self, object_id: str) -> asyncio.Lock:
        """Held by an operation across its work on one object (stop, remove,
        start...), so two RPCs on it do not interleave. `update` needs it not."""
        return self._locks.setdefault(object_id, asyncio.Lock())

    def add(self, record: R) -> None:
        """A record already on disk (created, or read at start) comes into memory and the index."""
        self.ids.add(record.id)
        self._records[record.id] = record

    def drop(self, object_id: str) -> None:
        """Out of memory and the index, at the end of its removal (the file went with its dir)."""
        self._records.pop(object_id, None)
        self.ids.remove(object_id)
        self._locks.pop(object_id, None)
        self._writing.pop(object_id, None)

    async def update(self, object_id: str, change: Callable[[R], R], *, durable: bool = True) -> R:
        """The record `change` makes of the current one: written, then current.
        `durable=False`: a change of in-memory fields only, not written. A
        cancel waits for the update to finish, so memory and file agree."""
        done = asyncio.ensure_future(self._update(object_id, change, durable))
        if await await_shielded(done):
            raise asyncio.CancelledError
        return done.result()

    async def _update(self, object_id: str, change: Callable[[R], R], durable: bool) -> R:
        async with self._writing.setdefault(object_id, asyncio.Lock()):
            while True:
                base = self.get(object_id)
                new = change(base)
                if durable:
                    await asyncio.to_thread(write_record, self.path(object_id), self.format, new)
                if self._records.get(object_id) is base:
                    self._records[object_id] = new
                    return new
                # update_now changed it while the file was written: again, from the record it made

    def update_now(self, object_id: str, change: Callable[[R], R]) -> R:
        """`update` written inline on the event loop, for callers that cannot
        await (a task's done callback, shutdown). A few ms: use sparingly."""
        new = change(self.get(object_id))
        write_record(self.path(object_id), self.format, new)
        self._records[object_id] = new
        return new
