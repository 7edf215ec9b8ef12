"""A directory watch on inotify(7), read by the event loop (no thread, no polling).

For conmon's exit dir: conmon writes `<exit dir>/<container id>` when the
container's init exits (GLib writes a temporary file and renames it in, so
IN_MOVED_TO; IN_CLOSE_WRITE covers a writer that does not). The kernel's
queue can overflow; the callback then gets None and must rescan.

Through libc (podrt.host.libc): the calls are three and stable, and no
well-kept package wraps them for asyncio.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from pathlib import Path

from podrt.host.libc import error, libc

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len



class DirWatch:
    """Calls `on_name(name)` for each file written into `directory`, and
    `on_name(None)` when events were lost (the queue overflowed)."""

    def __init__(self, directory: Path, on_name: Callable[[str | None], None]) -> None:
        self.directory = directory
        self._on_name = on_name
        self._fd = -1

    def start(self) -> None:
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise error("inotify_init1")
        if libc.inotify_add_watch(fd, os.fsencode(self.directory), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            failure = error(f"inotify_add_watch {self.directory}")
            os.close(fd)
            raise failure
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._read)

    def close(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        for name in parse(data):
            self._on_name(name)


def parse(data: bytes) -> list[str | None]:
    """The names in a buffer of inotify events; None for a queue overflow."""
    names: list[str | None] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset:offset + length]
        offset += length
        if mask & IN_Q_OVERFLOW:
            names.append(None)
        elif raw:
            names.append(os.fsdecode(raw.rstrip(b"\0")))
    return names

