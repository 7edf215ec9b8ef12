"""Small file helpers: durable writes (journal, state and image stores) and disk usage."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """A file's data, or a dir's entries, on the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path  # a dir's entries: the same call


def unlink_all(paths: Iterable[str | Path]) -> None:
    """Each of `paths` (gone already: fine)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def atomic_write(path: Path, payload: bytes, mode: int = 0o600, *, durable: bool = True, sync_dir: bool = True
                 ) -> None:
    """Temp file in the same dir, fsync, rename over, fsync dir: the file is always whole.
    `durable=False`: no fsyncs, for a file under the runroot (tmpfs, gone at a reboot
    anyway): whole for any reader, and after a crash of the daemon alone.
    `sync_dir=False`: the file's data is synced, its rename is made durable by the
    caller's later fsync of the same dir (a record written after it there)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not exc.filename:  # a failed write() names no file
            exc.filename = str(path)
        raise
    if durable and sync_dir:
        fsync_dir(path.parent)


def usage(roots: Iterable[Path]) -> tuple[int, int]:
    """(bytes, inodes) under `roots`, by blocks allocated (as du counts), for
    ImageFsInfo. Blocking; entries vanishing meanwhile are skipped."""
    used = inodes = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames):
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                used += st.st_blocks * 512
                inodes += 1
    return used, inodes
