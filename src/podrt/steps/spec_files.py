"""Writing an OCI spec: to the bundle (run dir, where runc reads it) and the
state dir (kept for status and restarts). The phase both transactions run;
each builds its own spec."""

from __future__ import annotations

import abc
import asyncio
import json
import threading
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from podrt.aio import finish_in_thread
from podrt.host.fsutil import atomic_write, unlink_all
from podrt.steps.base import DepsStep
from podrt.steps.context import Specified

SPEC_COPY = "config.json"  # the spec's name in the bundle and in the state dir
WRITTEN_KEPT = 64  # specs kept in memory (spec_text): those of the newest pods and containers

_written: dict[str, bytes] = {}  # path -> the JSON text write_spec wrote there
_written_lock = threading.Lock()  # worker threads write specs side by side: the eviction must not race


def write_spec(files: list[str], spec: dict[str, Any], *, synced: bool = True) -> None:
    """[bundle, state dir copy]: the bundle is under the runroot, which a reboot
    empties (its runc and conmon with it), so only the copy is synced (2 fsyncs
    fewer on every creation), and only its data: the record, written after it
    in the same dir by the creation's last step (and durably, dir and all),
    makes its rename durable too. Before that the creation has not committed,
    and its undo removes the copy anyway. `synced=False`: the copy is not
    synced either (a container's: steps/container/state.py syncs both after the
    answer). The text stays in memory for the copy's path:
    a status asked right after a create reads it there, not from the disk
    in a worker thread (whose wait for the GIL and the loop, with the
    creation's own work going on, was most of the status' time)."""
    payload = json.dumps(spec, separators=(",", ":")).encode()  # compact: C's encoder (indent takes Python's, ~10x)
    _forget(files)
    for n, f in enumerate(files):
        atomic_write(Path(f), payload, durable=synced and n > 0, sync_dir=False)
    if files:
        with _written_lock:
            _written[files[-1]] = payload
            if len(_written) > WRITTEN_KEPT:
                del _written[next(iter(_written))]  # the oldest


def _forget(files: list[str]) -> None:
    with _written_lock:
        for f in files:
            _written.pop(f, None)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


async def spec_text(path: Path) -> bytes | None:
    """The JSON text of the spec `write_spec` wrote to `path` (a state dir
    copy): from memory when kept (the newest), else read in a worker
    thread (as after a restart); None when it is gone."""
    text = _written.get(str(path))
    return text if text is not None else await asyncio.to_thread(_read, path)


S = TypeVar("S", bound=Specified, contravariant=True)
D = TypeVar("D", contravariant=True)


class WriteSpec(DepsStep[S, D]):
    journaled = False  # files in the object's dirs: the storage undo removes them
    # built in the worker thread that writes it, in the creation's trip (the container's builder
    # reads the image's /etc/passwd and /etc/group; a pod's builds ~1 ms of dicts, off the loop)
    blocking = True
    synced: ClassVar[bool] = True  # write_spec's: False where a later step syncs the copy

    @abc.abstractmethod
    def files(self, ctx: S) -> list[str]:
        """[bundle config.json, state dir copy]."""

    @abc.abstractmethod
    def build(self, ctx: S) -> dict[str, Any]:
        """The spec (also kept in ctx.spec); in a worker thread."""

    def record(self, ctx: S) -> dict[str, Any]:
        return {"files": self.files(ctx)}

    def do_blocking(self, ctx: S, data: dict[str, Any]) -> None:
        try:
            ctx.spec = self.build(ctx)
            write_spec(data["files"], ctx.spec, synced=self.synced)
        except BaseException:
            _remove(data["files"])
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        """In a worker thread: a removal's teardown makes no unlink on the loop."""
        await finish_in_thread(_remove, data["files"])


def _remove(files: list[str]) -> None:
    _forget(files)
    unlink_all(files)
