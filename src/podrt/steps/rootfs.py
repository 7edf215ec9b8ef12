"""A container's root (a pod's infra or a workload container): an overlay of
its image's layers with a writable upper of its own, or, for the builtin
pause image, its layer as it is. The record names the image, so an image
something runs from is not removed under it (the managers' image_users)."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from podrt.aio import finish_in_thread
from podrt.errors import FailedPrecondition
from podrt.host import idmap, mountinfo, mounts, overlay
from podrt.steps.base import DepsStep
from podrt.steps.context import DaemonPaths, LayerIdmap, Mounted

NO_UPPER = ("overlay", "nfs", "nfs4", "9p", "fuse", "cifs", "smb3")  # filesystems overlayfs refuses as upper


P = TypeVar("P", bound=DaemonPaths)


class Rootfs(DepsStep[Mounted[P], P]):
    kind = "rootfs"

    def record(self, ctx: Mounted[P]) -> dict[str, Any]:
        source = ctx.rootfs_source(self.deps)
        return {"image": source.image_id, "dir": None if source.shared is not None else str(source.dir),
                "scratch": str(source.idmap.scratch) if source.idmap and source.shared is None else None}

    async def do(self, ctx: Mounted[P], data: dict[str, Any]) -> None:
        source = ctx.rootfs_source(self.deps)
        if data["dir"] is None:
            ctx.rootfs = str(source.shared)
            return
        await mount_layers(self.deps.images_dir, source.image_name, source.lowers, Path(data["dir"]), source.idmap)
        ctx.rootfs = str(Path(data["dir"]) / "merged")

    async def undo(self, data: dict[str, Any]) -> None:
        if data.get("scratch"):
            release_scratch(Path(data["scratch"]))
        if data.get("dir") is not None:
            await unmount_layers(Path(data["dir"]))


async def mount_layers(images_dir: Path, image_name: str, lowers: Sequence[str], base: Path,
                       ids: LayerIdmap | None = None) -> None:
    """An overlay of `lowers` at base/merged with base/upper and base/work; all or nothing.
    With `ids`, each layer is ID-mapped into the pod's user namespace first (overlayfs
    takes ID-mapped layers, but cannot be ID-mapped itself), and the upper is the pod
    root's: what it writes is stored with its host ids, as the pod's view maps them.
    Its dir is then searchable by others (0711), so the pod's root can reach its root."""
    try:
        if ids is None:  # its dirs made in the mount's trip to a thread: no mkdir on the loop
            await overlay.mount(images_dir, lowers, base / "upper", base / "work", base / "merged",
                                before=functools.partial(_make_dirs, base, None))
        else:
            await _mount_idmapped(images_dir, lowers, base, ids)
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


async def _mount_idmapped(images_dir: Path, lowers: Sequence[str], base: Path, ids: LayerIdmap) -> None:
    """The overlay over ID-mapped clones of the layers, named 0, 1, ... in the scratch
    dir (shorter than the layers' links); the clones go once the overlay holds them."""
    try:
        await finish_in_thread(_make_dirs_and_clones, images_dir, lowers, base, ids)
        await overlay.mount(ids.scratch, [str(n) for n in range(len(lowers))], base / "upper", base / "work", base / "merged")
    finally:
        release_scratch(ids.scratch)


def _make_dirs(base: Path, ids: LayerIdmap | None) -> None:
    """base and its upper, work and merged dirs (base/.. made if missing)."""
    base.mkdir(parents=True, mode=0o711 if ids else 0o700)
    for part, mode in (("upper", 0o755), ("work", 0o700), ("merged", 0o755)):
        (base / part).mkdir(mode=mode)  # the upper's mode is the root's: 0700 would lock out non-root users
    if ids is not None:
        os.chown(base / "upper", *ids.owner)


def _make_dirs_and_clones(images_dir: Path, lowers: Sequence[str], base: Path, ids: LayerIdmap) -> None:
    _make_dirs(base, ids)
    for n, lower in enumerate(lowers):
        idmap.clone_into(ids.scratch, str(n), str(images_dir / lower), ids.userns)


def release_scratch(scratch: Path) -> None:
    """The layers' ID-mapped mounts (idempotent), and the owner's idmap dir once it is empty."""
    idmap.release(scratch)
    try:
        scratch.parent.rmdir()
    except OSError:  # gone, or other mounts of the owner's still there
        pass


async def unmount_layers(base: Path) -> None:
    """Idempotent; in a worker thread: an overlay's umount takes ~2 ms, and the
    writable layer's removal may be large."""
    await finish_in_thread(_unmount_and_remove, base)


def _unmount_and_remove(base: Path) -> None:
    while mounts.umount(str(base / "merged")):  # lazy, and again for anything stacked on it
        pass
    if base.exists():
        shutil.rmtree(base)
