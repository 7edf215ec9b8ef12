"""The host paths a container in a pod with a user namespace binds (its
volumes): each an ID-mapped clone (host/idmap.py) in the container's idmap
dir, which the spec binds instead, so the pod's root sees host files owned by
its host ID as its own, and what it writes there is stored with its host IDs.
Nothing for a container in the node's user namespace. Recursive, as the bind
is: a mount below the path on a filesystem that cannot be ID-mapped fails it."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.errors import FailedPrecondition
from podrt.host import idmap
from podrt.steps.base import ContainerStep
from podrt.steps.container.context import ContainerContext
from podrt.steps.rootfs import release_scratch


class IdmapBinds(ContainerStep):
    kind = "ctr-idmap"

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        return {"dir": str(self.deps.idmap_dir(ctx.id) / "binds") if ctx.sandbox.userns_path else None}

    async def do(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        if data["dir"] is None:
            return
        try:
            await finish_in_thread(self._clone_all, ctx, Path(data["dir"]))
        except BaseException:
            await self.undo(data)
            raise

    @staticmethod
    def _clone_all(ctx: ContainerContext, directory: Path) -> None:
        assert ctx.sandbox.userns_path
        for n, m in enumerate(ctx.config.mounts):
            if m.image:
                continue
            try:
                clone = idmap.clone_into(directory, str(n), m.host_path, ctx.sandbox.userns_path, recursive=True)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP):
                    raise
                raise FailedPrecondition(f"config.mounts[{n}] ({m.host_path}) cannot be ID-mapped for the pod's user "
                                         f"namespace: {exc.strerror} (its filesystem, or one mounted below it, "
                                         "does not take ID-mapped mounts)") from None
            ctx.volume_paths[n] = str(clone)

    async def undo(self, data: dict[str, Any]) -> None:
        if data.get("dir"):  # the clones, then the container's idmap dir once the rootfs's scratch is gone too
            await finish_in_thread(release_scratch, Path(data["dir"]))
