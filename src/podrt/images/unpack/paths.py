"""Paths below the layer root: names normalised by text alone, and
directories opened one component at a time relative to their parent's fd,
never through a symlink (the layer's own symlinks may point anywhere)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from podrt.images.unpack.problems import UnsafeLayer

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def lexical_parts(name: str, base: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """`name` (below `base`) as path components: '' and '.' dropped, '..'
    resolved by text alone; None when it would climb above the root."""
    parts = list(base)
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
        elif parts:
            parts.pop()
        else:
            return None
    return tuple(parts)


def entry_parts(name: str, entry: str) -> tuple[str, ...]:
    """`name` as path components below the root: a leading '/' and './' are
    dropped (as docker does), and it may not climb out of the root."""
    parts = lexical_parts(name)
    if parts is None:
        raise UnsafeLayer(f"layer entry {entry!r}: {name!r} escapes the layer root")
    return parts


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def open_dir(root: int, parts: tuple[str, ...], entry: str, *, create: bool) -> Iterator[int]:
    """An fd of the directory `parts` below `root`, opened one component
    at a time without following symlinks; missing ones made when `create`."""
    fd = os.dup(root)
    try:
        for depth, part in enumerate(parts, 1):
            child = _subdir(fd, part, "/".join(parts[:depth]), entry, create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _subdir(parent: int, part: str, path: str, entry: str, create: bool) -> int:
    try:
        return os.open(part, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise UnsafeLayer(f"layer entry {entry!r} needs {path!r}, which is not there") from None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = lstat_at(parent, part)
        what = "a symlink" if st is not None and stat.S_ISLNK(st.st_mode) else "not a directory"
        raise UnsafeLayer(f"layer entry {entry!r} goes through {path!r}, which is {what}") from None
    os.mkdir(part, 0o700, dir_fd=parent)  # an implicit parent, as docker makes them
    fd = os.open(part, DIR_FLAGS, dir_fd=parent)
    os.fchmod(fd, 0o755)
    return fd


@contextlib.contextmanager
def opened(parent: int, base: str) -> Iterator[int]:
    """The directory `base` of `parent`, not followed if a symlink."""
    fd = os.open(base, DIR_FLAGS, dir_fd=parent)
    try:
        yield fd
    finally:
        os.close(fd)
