"""Writing an OCI spec: to the bundle (run dir, where runc reads it) and the
state dir (kept for status and restarts). The phase both transactions run;
each builds its own spec."""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from podrt.aio import finish_in_thread
from podrt.host.fsutil import atomic_write
from podrt.steps.base import DepsStep
from podrt.steps.context import Specified


def write_spec(files: list[str], spec: dict[str, Any]) -> None:
    """[bundle, state dir copy]: the bundle is under the runroot, which a reboot
    empties (its runc and conmon with it), so only the copy is synced (2 fsyncs
    fewer on every creation)."""
    payload = json.dumps(spec, indent=1).encode()
    for n, f in enumerate(files):
        atomic_write(Path(f), payload, durable=n > 0)


def read_spec(path: Path) -> dict[str, Any] | None:
    """A spec `write_spec` wrote; None when it is gone (blocking: a worker thread's)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


S = TypeVar("S", bound=Specified, contravariant=True)
D = TypeVar("D", contravariant=True)


class WriteSpec(DepsStep[S, D]):
    journaled = False  # files in the object's dirs: the storage undo removes them

    @abc.abstractmethod
    def files(self, ctx: S) -> list[str]:
        """[bundle config.json, state dir copy]."""

    @abc.abstractmethod
    async def build(self, ctx: S) -> dict[str, Any]:
        """The spec (also kept in ctx.spec)."""

    def record(self, ctx: S) -> dict[str, Any]:
        return {"files": self.files(ctx)}

    async def do(self, ctx: S, data: dict[str, Any]) -> None:
        ctx.spec = await self.build(ctx)
        try:
            await finish_in_thread(write_spec, data["files"], ctx.spec)
        except BaseException:
            await self.undo(data)
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        for f in data["files"]:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
