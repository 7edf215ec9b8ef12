"""One store per kind of object (pods, containers), as containerd's: the
Registry's records, ID index and per-ID locks, with each record also in
`<dir>/<id>/state.json`.

A removal answered before its teardown is done (container/removals.py)
renames the file to `removing.json` first (`retire`): from then on the
object is gone for every reader, and a restart finishes its teardown from
that file (`read_retired`).

A record is frozen: reads never write. A change is `update(id, fn)`: `fn`
makes the new record from the current one, the file is written whole
(atomic_write), then the new record replaces the old in memory; updates of
one ID are serialized, so none is lost. A failed write changes nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from podrt.aio import await_shielded
from podrt.host.fsutil import atomic_write, fsync_dir
from podrt.state.format import R, RecordFormat
from podrt.state.idindex import IdIndex
from podrt.state.registry import Registry

STATE_FILE = "state.json"
RETIRED_FILE = "removing.json"  # the record of an object whose teardown is under way


def write_record(path: Path, fmt: RecordFormat[R], record: R, *, durable: bool = True) -> None:
    """Blocking: the record's file, whole (creation's last step writes it so); `durable=False`:
    no fsyncs (a container's, synced after the answer: steps/container/state.py)."""
    atomic_write(path, fmt.encode(record), durable=durable)


def _rename_durably(source: Path, target: Path) -> None:
    os.rename(source, target)
    fsync_dir(target.parent)


class StateStore(Registry[R]):
    def __init__(self, ids: IdIndex, what: str, directory: Path, fmt: RecordFormat[R]) -> None:
        super().__init__(ids, what)
        self.directory = directory
        self.format: RecordFormat[R] = fmt
        self._writing: dict[str, asyncio.Lock] = {}

    def path(self, object_id: str) -> Path:
        return self.directory / object_id / STATE_FILE

    def read_all(self, name: str = STATE_FILE) -> tuple[list[R], list[tuple[Path, str]]]:
        """Blocking, at start: every readable record on disk (memory untouched),
        and (path, problem) for the rest; `name`: RETIRED_FILE reads the retired ones."""
        found: list[R] = []
        bad: list[tuple[Path, str]] = []
        if not self.directory.is_dir():
            return found, bad
        for state_file in sorted(self.directory.glob(f"*/{name}")):
            try:
                if not (text := state_file.read_bytes()):  # cut by a power loss before it was durable: never committed
                    continue
                found.append(self.format.decode(text))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                bad.append((state_file, f"{type(exc).__name__}: {exc}"))
        return found, bad

    def drop_lock(self, full_id: str) -> None:
        super().drop_lock(full_id)
        self._writing.pop(full_id, None)

    async def update(self, object_id: str, change: Callable[[R], R], *, durable: bool = True) -> R:
        """The record `change` makes of the current one: written, then current.
        `durable=False`: a change of in-memory fields only, not written. A
        cancel waits for the update to finish, so memory and file agree.
        Needs not the object's lock (`lock`), which an operation holds across its work."""
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
                if self.find(object_id) is base:
                    self.add(object_id, new)
                    return new
                # update_now changed it while the file was written: again, from the record it made

    async def retire(self, object_id: str) -> R:
        """The record leaves memory once its file is renamed to RETIRED_FILE,
        durably (one rename and one fsync of its dir: a restart tears it down
        instead of restoring it). After the updates in flight, so none writes
        the state file again; later ones find no record (NotFound). A cancel
        waits for it, as `update`'s does."""
        done = asyncio.ensure_future(self._retire(object_id))
        if await await_shielded(done):
            raise asyncio.CancelledError
        return done.result()

    async def _retire(self, object_id: str) -> R:
        async with self._writing.setdefault(object_id, asyncio.Lock()):
            record = self.get(object_id)
            path = self.path(object_id)
            await asyncio.to_thread(_rename_durably, path, path.with_name(RETIRED_FILE))
            self.pop(object_id)
            return record

    def update_now(self, object_id: str, change: Callable[[R], R]) -> R:
        """`update` written inline on the event loop, for callers that cannot
        await (a task's done callback, shutdown). A few ms: use sparingly."""
        new = change(self.get(object_id))
        write_record(self.path(object_id), self.format, new)
        self.add(object_id, new)
        return new
