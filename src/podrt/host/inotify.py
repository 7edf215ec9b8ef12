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
import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

from podrt.host.libc import error, libc

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000  # the watch is gone (its directory was removed, or it was taken off)
IN_NONBLOCK = os.O_NONBLOCK
POLL = 0.01  # wait_for_file's look-again interval when the user has no inotify instance or watch left
IN_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


def _open(on_readable: Callable[[], None]) -> int:
    """A non-blocking inotify instance, read by the running loop."""
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise error("inotify_init1")
    asyncio.get_running_loop().add_reader(fd, on_readable)
    return fd


def _close(fd: int) -> None:
    """In a worker thread, not waited for: closing an inotify instance waits for
    the kernel's SRCU grace period (1-20 ms under load), which on the loop stalled every RPC."""
    loop = asyncio.get_running_loop()
    loop.remove_reader(fd)
    loop.run_in_executor(None, os.close, fd)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 64 * 1024)
    except BlockingIOError:
        return b""


class DirWatch:
    """Calls `on_name(name)` for each file written into `directory`, and
    `on_name(None)` when events were lost (the queue overflowed)."""

    def __init__(self, directory: Path, on_name: Callable[[str | None], None]) -> None:
        self.directory = directory
        self._on_name = on_name
        self._fd = -1

    def start(self) -> None:
        fd = _open(self._read)
        if libc.inotify_add_watch(fd, os.fsencode(self.directory), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            failure = error(f"inotify_add_watch {self.directory}")
            _close(fd)
            raise failure
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            _close(self._fd)
            self._fd = -1

    def _read(self) -> None:
        for name in parse(_read(self._fd)):
            self._on_name(name)


async def wait_for_file(path: Path, timeout: float) -> bool:
    """Until `path` is written into its directory (watched before it is looked
    for: no write is missed, no polling, unless the user has no inotify instance
    or watch left: then it looks every POLL); False when `timeout` passed first."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[None] = loop.create_future()

    def written(name: str | None) -> None:
        if (name is None or name == path.name) and not seen.done():
            seen.set_result(None)  # None: events were lost; looked for again below

    watch = DirWatch(path.parent, written)
    deadline = loop.time() + timeout
    try:
        watch.start()
    except OSError as exc:  # instances are few (128 a user by default): a stop must not fail for it
        if exc.errno not in (errno.EMFILE, errno.ENOSPC):
            raise
        while not path.exists():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL)
        return True
    try:
        while not path.exists():
            if seen.done():
                seen = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await seen
            except TimeoutError:
                return path.exists()
        return True
    finally:
        watch.close()


class DirWatches:
    """Many directories on one inotify instance (instances are few: 128 a
    user by default; watches are many): `on_name(key, name)` for each file
    written into the directory added under `key`, and `on_name(None, None)`
    when events were lost. The instance opens at the first `add`."""

    def __init__(self, on_name: Callable[[str | None, str | None], None]) -> None:
        self._on_name = on_name
        self._fd = -1
        self._keys: dict[int, str] = {}  # watch descriptor -> key
        self._wds: dict[str, int] = {}

    def add(self, key: str, directory: Path) -> None:
        """OSError as the kernel says it (FileNotFoundError: no such directory; ENOSPC: no watch left)."""
        if self._fd < 0:
            self._fd = _open(self._read)
        wd = libc.inotify_add_watch(self._fd, os.fsencode(directory), IN_CLOSE_WRITE | IN_MOVED_TO)
        if wd < 0:
            raise error(f"inotify_add_watch {directory}", str(directory))
        self.remove(key)
        self._keys[wd], self._wds[key] = key, wd

    def remove(self, key: str) -> None:
        wd = self._wds.pop(key, None)
        if wd is not None and self._keys.pop(wd, None) is not None:
            libc.inotify_rm_watch(self._fd, wd)  # EINVAL when its directory went first: nothing to undo

    def __contains__(self, key: object) -> bool:
        return key in self._wds

    def close(self) -> None:
        if self._fd >= 0:
            _close(self._fd)
            self._fd = -1
        self._keys.clear()
        self._wds.clear()

    def _read(self) -> None:
        for wd, mask, name in events(_read(self._fd)):
            if mask & IN_Q_OVERFLOW:
                self._on_name(None, None)
            elif mask & IN_IGNORED:
                if (key := self._keys.pop(wd, None)) is not None and self._wds.get(key) == wd:
                    del self._wds[key]
            elif name and (key := self._keys.get(wd)) is not None:
                self._on_name(key, name)


def events(data: bytes) -> list[tuple[int, int, str]]:
    """(watch descriptor, mask, name) of each event in a buffer; the name is "" for none."""
    found = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset:offset + length]
        offset += length
        found.append((wd, mask, os.fsdecode(raw.rstrip(b"\0"))))
    return found


def parse(data: bytes) -> list[str | None]:
    """The names in a buffer of inotify events; None for a queue overflow."""
    return [None if mask & IN_Q_OVERFLOW else name for _wd, mask, name in events(data) if mask & IN_Q_OVERFLOW or name]

