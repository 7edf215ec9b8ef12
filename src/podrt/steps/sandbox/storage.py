"""The sandbox's dirs: state dir under root, run dir (bundle) under runroot, log dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.errors import InvalidArgument
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext


def ensure_sane_log_path(log_path: Path) -> None:
    """conmon opens the log path and would follow a symlink anywhere: a symlink
    there is removed (replaced by conmon's new file); a directory is refused."""
    try:
        st = log_path.lstat()
    except FileNotFoundError:
        return
    if log_path.is_symlink():
        log_path.unlink()
    elif not os.path.isfile(log_path) or st.st_nlink > 1:
        raise InvalidArgument(f"log path {log_path} exists and is not a regular file")


def remove_dirs_and_log(dirs: list[str], log_file: str) -> None:
    """A pod's or a container's dirs, and its own log file ("": kept)."""
    for d in dirs:
        if os.path.lexists(d):
            shutil.rmtree(d)
    if log_file:
        try:
            os.unlink(log_file)
        except FileNotFoundError:
            pass


def remove_own_log_dir(log_dir: Path) -> None:
    """podrt's own log dir of a pod that named none (crictl): no kubelet reads
    or removes its containers' logs, so the whole dir goes with the pod."""
    try:
        shutil.rmtree(log_dir)
    except FileNotFoundError:
        pass


class Storage(SandboxStep):
    kind = "storage"
    blocking = True  # directories made (ext4 may wait for its journal): in a worker thread

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        log_dir = Path(ctx.log_directory)
        return {
            "dirs": [str(self.deps.sandbox_dir(ctx.id)), str(self.deps.run_dir(ctx.id))],
            "log_dir": str(log_dir),
            "log_file": ctx.infra_log_path,
            "log_dir_created": not log_dir.exists(),  # decided before do(): undo may run after a crash
            "log_dir_own": log_dir == self.deps.own_log_dir(ctx.id),
        }

    def do_blocking(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        try:
            for d in data["dirs"]:  # searchable by a user namespace's root: its root is below (steps/rootfs.py)
                Path(d).mkdir(parents=True, mode=0o711 if ctx.config.own_userns else 0o700)
            log_dir = Path(data["log_dir"])
            if log_dir.is_symlink():
                raise InvalidArgument(f"log directory {log_dir} is a symlink")
            log_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
            ensure_sane_log_path(Path(ctx.infra_log_path))
        except BaseException:
            self._remove(data)
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        await finish_in_thread(self._remove, data)  # trees of files: off the event loop

    @staticmethod
    def _remove(data: dict[str, Any]) -> None:
        remove_dirs_and_log(data["dirs"], data["log_file"])  # the infra's own log; the kubelet owns the rest
        if data.get("log_dir_own"):
            remove_own_log_dir(Path(data["log_dir"]))
        elif data["log_dir_created"]:
            try:
                os.rmdir(data["log_dir"])  # only if empty: another attempt of the pod may log there
            except OSError:
                pass
