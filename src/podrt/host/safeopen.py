"""Reading a file of an image's rootfs as the container will see it.

An image controls its own symlinks: `/etc -> /host-etc` or
`etc/passwd -> ../../../../etc/passwd` must not make podrt read the host's
files. openat2(2) with RESOLVE_IN_ROOT resolves every component (absolute
links and `..` included) inside the rootfs, as a chroot would, in the kernel
(5.6+). Python 3.11 has no binding, so it is called through libc's
syscall(); kernels without it fall back to refusing every symlink.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from podrt.host.libc import error, last_errno, libc

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
SYS_OPENAT2 = 437  # the same number on every architecture (unified since 5.1's table)



class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root: str, path: str) -> int:
    """A read-only fd of `path` (relative to `root`, as inside it); OSError as open(2) gives."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _openat2(root_fd, path.lstrip("/"))
    finally:
        os.close(root_fd)


def read_in_root(root: str, path: str, limit: int) -> bytes:
    """Up to `limit` bytes of a regular file of the rootfs."""
    fd = open_in_root(root, path)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a fifo or device would block or leak
            raise OSError(errno.EINVAL, "not a regular file", path)
        return f.read(limit)


def _openat2(dir_fd: int, path: str) -> int:
    how = _OpenHow(os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        return fd
    if last_errno() != errno.ENOSYS:
        raise error("openat2", path)
    return _walk_no_symlinks(dir_fd, path)


def _walk_no_symlinks(dir_fd: int, path: str) -> int:
    """Without openat2: component by component, refusing any symlink or '..'."""
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise OSError(errno.EXDEV, "'..' in a rootfs path", path)
    fd = os.dup(dir_fd)
    try:
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise
