"""ID-mapped mounts (Linux >= 5.12): a clone of a mount through which files
show the ids a user namespace maps them to, so a pod's root (container ID 0,
host ID say 1000) sees the image's root-owned files as its own.

open_tree(OPEN_TREE_CLONE) detaches a copy of a mount, mount_setattr
(MOUNT_ATTR_IDMAP) gives it the user namespace's mappings, move_mount
attaches it at a path; runc 1.1 cannot do this itself. Python has no binding
for these calls: syscall(2) through libc, with the numbers every
architecture shares for them. Which filesystems allow it is the kernel's
call (ext4, xfs, btrfs since 5.12-5.15, tmpfs since 6.3; overlayfs takes
ID-mapped layers since 5.19, but cannot itself be ID-mapped), so podrt tries
once what it needs (IdmapSupport) before it reports user namespaces.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
from pathlib import Path

from podrt.aio import finish_in_own_thread
from podrt.host import mounts
from podrt.host.libc import last_errno, libc
from podrt.host.nspin import holding, tool

SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
AT_FDCWD = -100
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_EMPTY_PATH, AT_RECURSIVE = 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
PROBE_MAP = "0 65536 65536\n"  # any mapping will do to probe (critest's)

libc.syscall.restype = ctypes.c_long


def _error(call: str, path: str) -> OSError:
    err = last_errno()
    return OSError(err, f"{call}: {os.strerror(err)}", path)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def idmapped_clone(source: str, target: str, userns_fd: int, *, recursive: bool) -> None:
    """Attach at `target` (an existing file or dir, as `source` is) a clone of the
    mount at `source` (with those below it if `recursive`), ID-mapped by the user
    namespace `userns_fd`. OSError naming the call that failed (EINVAL from
    mount_setattr: a filesystem that cannot be ID-mapped)."""
    rec = AT_RECURSIVE if recursive else 0
    fd = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source), ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec))
    if fd < 0:
        raise _error("open_tree", source)
    try:
        attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        if libc.syscall(SYS_MOUNT_SETATTR, fd, b"", ctypes.c_uint(AT_EMPTY_PATH | rec), ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr))) < 0:
            raise _error("mount_setattr MOUNT_ATTR_IDMAP", source)
        if libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, os.fsencode(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)) < 0:
            raise _error("move_mount", target)
    finally:
        os.close(fd)


def clone_into(directory: Path, name: str, source: str, userns: str, *, recursive: bool = False) -> Path:
    """idmapped_clone of `source` at directory/name (made here: a file for a
    file, else a dir), mapped by the user namespace pinned at `userns`; the
    target is removed again if the mount fails."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / name
    if os.path.isdir(source):
        target.mkdir(mode=0o700)
    else:
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        ns = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            idmapped_clone(source, str(target), ns, recursive=recursive)
        finally:
            os.close(ns)
    except BaseException:
        _remove_target(target)
        raise
    return target


def _remove_target(target: Path) -> None:
    """rmdir or unlink, never a tree: a mount still there makes it fail (EBUSY), deleting nothing through it."""
    try:
        target.rmdir() if target.is_dir() and not target.is_symlink() else target.unlink()
    except FileNotFoundError:
        pass


def release(directory: Path) -> None:
    """Unmount and remove each entry of `directory` (mount points podrt made
    there), then the directory. Idempotent. Only rmdir and unlink: an entry
    whose mount would not go stays, with the error raised, and nothing is
    deleted through it."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        while mounts.umount(str(entry)):  # lazy; again for anything stacked
            pass
        _remove_target(entry)
    directory.rmdir()


class IdmapSupport:
    """Whether podrt can give a pod with a user namespace its files here:
    an ID-mapped mount of a directory in podrt's root (where image layers
    are) and an overlay with that mount as its lower layer, as a container's
    rootfs is made. Tried once, when first asked (about 10 ms), in a mount
    namespace of a throwaway thread: whatever the try mounts goes with it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._result: tuple[str | None] | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        """None when it works, else what failed (for the refusal's message)."""
        async with self._lock:
            if self._result is None:
                self._result = (await self._probe(),)
            return self._result[0]

    async def _probe(self) -> str | None:
        if closed := unsearchable(self.root):
            return (f"{closed} is not searchable by others (mode {closed.stat().st_mode & 0o777:o}): a pod's root, "
                    "an unprivileged host ID, must reach its root file system below it (chmod o+x)")
        scratch = self.root / "idmap-probe"
        try:
            async with holding([tool("unshare"), "--user", "--"], "probing ID-mapped mounts") as pid:
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{pid}/{name}", "w") as f:
                        f.write(PROBE_MAP)
                ns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)  # holds it after the child ends
            try:
                await finish_in_own_thread(_try_overlay, scratch, ns)
            finally:
                os.close(ns)
        except OSError as exc:
            return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)  # plain dirs: the mounts went with the thread's namespace
        return None


def unsearchable(root: Path) -> Path | None:
    """The first of `root`'s ancestors, itself, and its dirs that hold pods' and
    containers' roots, that others may not search (o+x), if any."""
    dirs = [*reversed(root.parents), root] + [root / p for p in ("images", "images/layers", "containers", "sandboxes")]
    return next((d for d in dirs if d.exists() and not d.stat().st_mode & 0o001), None)


def _try_overlay(scratch: Path, userns_fd: int) -> None:
    """In this thread's own mount namespace (gone when the thread ends): an ID-mapped
    lower layer whose root-owned file shows as the mapped id through the overlay."""
    if libc.unshare(CLONE_NEWNS) != 0:
        raise _error("unshare(CLONE_NEWNS)", "")
    mounts.mount("none", "/", "", MS_REC | MS_PRIVATE)  # nothing done here propagates to the host
    shutil.rmtree(scratch, ignore_errors=True)
    for part in ("lower", "mapped", "upper", "work", "merged"):
        (scratch / part).mkdir(parents=True)
    (scratch / "lower" / "file").touch()
    idmapped_clone(str(scratch / "lower"), str(scratch / "mapped"), userns_fd, recursive=False)
    mounts.mount("overlay", str(scratch / "merged"), "overlay", 0,
                 f"lowerdir={scratch / 'mapped'},upperdir={scratch / 'upper'},workdir={scratch / 'work'}")
    seen = (scratch / "merged" / "file").stat().st_uid
    if seen != int(PROBE_MAP.split()[1]):
        raise OSError(errno.EINVAL, f"overlayfs shows an ID-mapped layer's file as uid {seen}", str(scratch))
