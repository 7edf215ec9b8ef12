"""The container's dirs: state dir under root, run dir (bundle, exit file) under runroot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.steps.base import ContainerStep
from podrt.steps.container.context import ContainerContext
from podrt.steps.sandbox.storage import ensure_sane_log_path, remove_dirs_and_log


class ContainerStorage(ContainerStep):
    kind = "ctr-storage"
    blocking = True  # made in the trip that journals its intent (rollback.Step.blocking)

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        # a log file there already (an earlier container's, kept for the kubelet) is not this creation's to remove
        log_file = "" if os.path.lexists(ctx.log_path) else ctx.log_path
        return {"dirs": [str(self.deps.container_dir(ctx.id)), str(self.deps.run_dir(ctx.id))], "log_file": log_file}

    def do_blocking(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        try:
            for d in data["dirs"]:  # searchable by a user namespace's root: its root is below (steps/rootfs.py)
                Path(d).mkdir(parents=True, mode=0o711 if ctx.sandbox.config.own_userns else 0o700)
            Path(ctx.log_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            ensure_sane_log_path(Path(ctx.log_path))
        except BaseException:
            remove_dirs_and_log(data["dirs"], data["log_file"])
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        await finish_in_thread(remove_dirs_and_log, data["dirs"], data["log_file"])  # a tree: off the event loop
