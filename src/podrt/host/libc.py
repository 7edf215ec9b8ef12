"""libc, loaded once, for the system calls Python 3.11 has no binding for
(mount, umount2, syncfs, unshare, setns, inotify, openat2), and their errno
as an OSError."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def last_errno() -> int:
    return ctypes.get_errno()


def error(what: str, filename: str | None = None) -> OSError:
    """The OSError of the call that just failed: "<what>: <strerror>", or with a file name when given."""
    err = ctypes.get_errno()
    if filename is not None:
        return OSError(err, os.strerror(err), filename)
    return OSError(err, f"{what}: {os.strerror(err)}")
