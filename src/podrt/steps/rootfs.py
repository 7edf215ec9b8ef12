"""A container's root (a pod's infra or a workload container): an overlay of
its image's layers with a writable upper of its own, or, for the builtin
pause image, its layer as it is. The record names the image, so an image
something runs from is not removed under it (the managers' image_users)."""

from __future__ import annotations

import asyncio
import errno
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from podrt.aio import finish_in_thread
from podrt.errors import FailedPrecondition
from podrt.host import mountinfo, mounts, overlay
from podrt.steps.base import DepsStep
from podrt.steps.context import DaemonPaths, Mounted

NO_UPPER = ("overlay", "nfs", "nfs4", "9p", "fuse", "cifs", "smb3")  # filesystems overlayfs refuses as upper


P = TypeVar("P", bound=DaemonPaths)


class Rootfs(DepsStep[Mounted[P], P]):
    kind = "rootfs"

    def record(self, ctx: Mounted[P]) -> dict[str, Any]:
        source = ctx.rootfs_source(self.deps)
        return {"image": source.image_id, "dir": None if source.shared is not None else str(source.dir)}

    async def do(self, ctx: Mounted[P], data: dict[str, Any]) -> None:
        source = ctx.rootfs_source(self.deps)
        if data["dir"] is None:
            ctx.rootfs = str(source.shared)
            return
        await mount_layers(self.deps.images_dir, source.image_name, source.lowers, Path(data["dir"]))
        ctx.rootfs = str(Path(data["dir"]) / "merged")

    async def undo(self, data: dict[str, Any]) -> None:
        if data.get("dir") is not None:
            await unmount_layers(Path(data["dir"]))


async def mount_layers(images_dir: Path, image_name: str, lowers: Sequence[str], base: Path) -> None:
    """An overlay of `lowers` at base/merged with base/upper and base/work; all or nothing."""
    try:
        base.mkdir(parents=True, mode=0o700)
        for part, mode in (("upper", 0o755), ("work", 0o700), ("merged", 0o755)):
            (base / part).mkdir(mode=mode)  # the upper's mode is the root's: 0700 would lock out non-root users
        await overlay.mount(images_dir, lowers, base / "upper", base / "work", base / "merged")
    except BaseException as exc:
        await unmount_layers(base)
        refusal = await _refusal(exc, image_name, base)
        if refusal is None:
            raise
        raise refusal from None


async def _refusal(exc: BaseException, image_name: str, base: Path) -> FailedPrecondition | None:
    """What the request or the host caused, said as such: an image with too many
    layers, an upper dir on a filesystem overlayfs refuses (EINVAL). None: a failure to raise as it is."""
    if isinstance(exc, overlay.TooManyLayers):
        return FailedPrecondition(f"image {image_name}: {exc}")
    if not isinstance(exc, OSError) or exc.errno != errno.EINVAL:
        return None
    fstype = await asyncio.to_thread(mountinfo.fstype_of, str(base.parent))
    if fstype not in NO_UPPER:
        return None
    return FailedPrecondition(f"the kernel refused the overlay at {base} (EINVAL): its upper dir is on {fstype}, "
                              f"which overlayfs cannot write to; put podrt's root on ext4, xfs, btrfs or tmpfs "
                              f"(`podrt check` tests it)")


async def unmount_layers(base: Path) -> None:
    """Idempotent; the removal of the writable layer runs in a worker thread (it may be large)."""
    while mounts.umount(str(base / "merged")):  # lazy, and again for anything stacked on it
        pass
    if base.exists():
        await finish_in_thread(shutil.rmtree, base)
