"""Overlay mounts of image layers, named by short relative links.

mount(2) takes its options in one page (4096 bytes). Absolute layer paths
(`/var/lib/podrt/images/l/<26 chars>`, about 50 bytes each) would stop an
image at about 80 layers; the relative links `l/<26 chars>` (29 bytes) let
140 through, as containers/storage does. Relative paths resolve against the
caller's working directory, which threads share, so a mount by relative
links runs on one thread of its own that has unshared its filesystem
context (unshare CLONE_FS) and changes directory there alone; the rest of
the daemon never sees its cwd move, and no mount(8) child is forked per
container. Most images' absolute links fit in the page: those mount in the
caller's thread, with no hop to that thread (`mount_blocking`).
"""

from __future__ import annotations

import concurrent.futures
import os
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

from podrt.host import mounts
from podrt.host.libc import error, libc

PAGE_LIMIT = os.sysconf("SC_PAGESIZE") - 1  # the options string and its NUL
_CLONE_FS = 0x00000200


class TooManyLayers(ValueError):
    """The lower layers do not fit in one overlay mount's options."""


def _own_cwd() -> None:
    if libc.unshare(_CLONE_FS) != 0:
        raise error("unshare(CLONE_FS)")


_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="overlay-mount", initializer=_own_cwd)


def options(lowers: Sequence[str], upper: Path, work: Path) -> str:
    """The mount options; `lowers` top layer first."""
    if not lowers:
        raise ValueError("an overlay needs at least one lower layer")
    text = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    if len(text) > PAGE_LIMIT:
        raise TooManyLayers(f"{len(lowers)} layers need {len(text)} bytes of overlay mount options "
                            f"(at most {PAGE_LIMIT})")
    return text


def _mount_relative(images_dir: Path, opts: str, target: Path) -> None:
    os.chdir(images_dir)  # this thread's own cwd (see _own_cwd)
    try:
        mounts.mount("overlay", str(target), "overlay", 0, opts)
    finally:
        os.chdir("/")


def mount_blocking(images_dir: Path, lowers: Sequence[str], upper: Path, work: Path, target: Path) -> None:
    """Mount the layers at `target` (`lowers` top first, relative to images_dir); blocking.
    By absolute paths in the caller's thread when they fit in the options' page,
    else by the relative links on the mount thread, waited for."""
    try:
        opts = options([os.path.join(images_dir, lower) for lower in lowers], upper, work)
    except TooManyLayers:
        opts = options(lowers, upper, work)  # TooManyLayers when even these do not fit
        _thread.submit(_mount_relative, images_dir, opts, target).result()
        return
    mounts.mount("overlay", str(target), "overlay", 0, opts)


def upper_changes(upper: Path, hidden: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """What a container changed in its root, read from its overlay's upper dir:
    (paths added or changed, relative, parents before their children; paths
    deleted, absolute, from the whiteouts: character devices 0/0). What lies at
    or below a path in `hidden` (a mount point the runtime made, which its
    mount covers) is left out."""
    covered = tuple(h.rstrip("/") for h in hidden if h.rstrip("/"))

    def is_hidden(path: str) -> bool:
        return any(path == h or path.startswith(h + "/") for h in covered)

    changed: list[str] = []
    deleted: list[str] = []
    for dirpath, dirnames, filenames in os.walk(upper):  # symlinks are entries, never followed
        rel = os.path.relpath(dirpath, upper)
        for name in (*dirnames, *filenames):
            path = name if rel == "." else os.path.join(rel, name)
            if is_hidden("/" + path):
                continue
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                deleted.append("/" + path)
            else:
                changed.append(path)
        dirnames[:] = [d for d in dirnames if not is_hidden("/" + (d if rel == "." else os.path.join(rel, d)))]
    return changed, deleted
