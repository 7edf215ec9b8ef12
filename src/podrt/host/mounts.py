"""mount(2)/umount(2) through libc: no fork+exec of mount(8) on the hot path."""

from __future__ import annotations

import ctypes
import os

from podrt.host.libc import error, last_errno
from podrt.host.libc import libc as _libc

_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2
EINVAL, ENOENT = 22, 2


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        raise error(f"mount {fstype} on {target}")


def umount(target: str) -> bool:
    """Lazy unmount; idempotent (not mounted or gone is fine). Returns whether a
    mount was detached (call again for stacked mounts)."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) == 0:
        return True
    if last_errno() not in (EINVAL, ENOENT):
        raise error(f"umount {target}")
    return False

