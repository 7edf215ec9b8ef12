"""A container's root (a pod's infra or a workload container): an overlay of
its image's layers with a writable upper of its own, or, for the builtin
pause image, its layer as it is. The record names the image, so an image
something runs from is not removed under it (the managers' image_users)."""

from __future__ import annotations

import errno
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
    blocking = True  # mkdirs and mount(2): in the creation's trip to a worker thread

    def record(self, ctx: Mounted[P]) -> dict[str, Any]:
        source = ctx.rootfs_source(self.deps)
        return {"image": source.image_id, "dir": None if source.shared is not None else str(source.dir),
                "scratch": str(source.idmap.scratch) if source.idmap and source.shared is None else None}

    def do_blocking(self, ctx: Mounted[P], data: dict[str, Any]) -> None:
        source = ctx.rootfs_source(self.deps)
        if data["dir"] is None:
            ctx.rootfs = str(source.shared)
            return
        mount_layers(self.deps.images_dir, source.image_name, source.lowers, Path(data["dir"]), source.idmap)
        ctx.rootfs = str(Path(data["dir"]) / "merged")

    async def undo(self, data: dict[str, Any]) -> None:
        await finish_in_thread(release_layers, [data["scratch"]] if data.get("scratch") else [],
                               [data["dir"]] if data.get("dir") is not None else [])


def release_layers(scratches: Sequence[str], bases: Sequence[str]) -> None:
    """Blocking: ID-mapped layers (their scratch dirs), then overlays and their dirs (an
    overlay's umount takes ~2 ms, and the writable layer's removal may be large)."""
    for scratch in scratches:
        release_scratch(Path(scratch))
    for base in bases:
        unmount_and_remove(Path(base))


def mount_layers(images_dir: Path, image_name: str, lowers: Sequence[str], base: Path,
                 ids: LayerIdmap | None = None) -> None:
    """Blocking: an overlay of `lowers` at base/merged with base/upper and base/work; all or nothing.
    With `ids`, each layer is ID-mapped into the pod's user namespace first (overlayfs
    takes ID-mapped layers, but cannot be ID-mapped itself), and the upper is the pod
    root's: what it writes is stored with its host ids, as the pod's view maps them.
    Its dir is then searchable by others (0711), so the pod's root can reach its root."""
    try:
        _make_dirs(base, ids)
        if ids is None:
            overlay.mount_blocking(images_dir, lowers, base / "upper", base / "work", base / "merged")
        else:
            _mount_idmapped(images_dir, lowers, base, ids)
    except BaseException as exc:
        unmount_and_remove(base)
        refusal = _refusal(exc, image_name, base)
        if refusal is None:
            raise
        raise refusal from None


def _refusal(exc: BaseException, image_name: str, base: Path) -> FailedPrecondition | None:
    """What the request or the host caused, said as such: an image with too many
    layers, an upper dir on a filesystem overlayfs refuses (EINVAL). None: a failure to raise as it is."""
    if isinstance(exc, overlay.TooManyLayers):
        return FailedPrecondition(f"image {image_name}: {exc}")
    if not isinstance(exc, OSError) or exc.errno != errno.EINVAL:
        return None
    fstype = mountinfo.fstype_of(str(base.parent))
    if fstype not in NO_UPPER:
        return None
    return FailedPrecondition(f"the kernel refused the overlay at {base} (EINVAL): its upper dir is on {fstype}, "
                              f"which overlayfs cannot write to; put podrt's root on ext4, xfs, btrfs or tmpfs "
                              f"(`podrt check` tests it)")


def _mount_idmapped(images_dir: Path, lowers: Sequence[str], base: Path, ids: LayerIdmap) -> None:
    """The overlay over ID-mapped clones of the layers, named 0, 1, ... in the scratch
    dir (shorter than the layers' links); the clones go once the overlay holds them."""
    try:
        for n, lower in enumerate(lowers):
            idmap.clone_into(ids.scratch, str(n), str(images_dir / lower), ids.userns)
        overlay.mount_blocking(ids.scratch, [str(n) for n in range(len(lowers))], base / "upper", base / "work",
                               base / "merged")
    finally:
        release_scratch(ids.scratch)


def _make_dirs(base: Path, ids: LayerIdmap | None) -> None:
    """base and its upper, work and merged dirs (base/.. made if missing)."""
    base.mkdir(parents=True, mode=0o711 if ids else 0o700)
    for part, mode in (("upper", 0o755), ("work", 0o700), ("merged", 0o755)):
        (base / part).mkdir(mode=mode)  # the upper's mode is the root's: 0700 would lock out non-root users
    if ids is not None:
        os.chown(base / "upper", *ids.owner)


def release_scratch(scratch: Path) -> None:
    """The layers' ID-mapped mounts (idempotent), and the owner's idmap dir once it is empty."""
    idmap.release(scratch)
    try:
        scratch.parent.rmdir()
    except OSError:  # gone, or other mounts of the owner's still there
        pass


def unmount_and_remove(base: Path) -> None:
    while mounts.umount(str(base / "merged")):  # lazy, and again for anything stacked on it
        pass
    if base.exists():
        shutil.rmtree(base)
