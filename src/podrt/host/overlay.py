"""Overlay mounts of image layers, named by short relative links.

mount(2) takes its options in one page (4096 bytes). Absolute layer paths
(`/var/lib/podrt/images/l/<26 chars>`, about 50 bytes each) would stop an
image at about 80 layers; the relative links `l/<26 chars>` (29 bytes) let
140 through, as containers/storage does. Relative paths resolve against the
caller's working directory, which threads share, so every mount runs on one
thread of its own that has unshared its filesystem context (unshare
CLONE_FS) and changes directory there alone; the rest of the daemon never
sees its cwd move, and no mount(8) child is forked per container.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Sequence
from pathlib import Path

from podrt.aio import await_shielded
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
    """The mount options; `lowers` top layer first, relative to the images dir."""
    if not lowers:
        raise ValueError("an overlay needs at least one lower layer")
    text = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    if len(text) > PAGE_LIMIT:
        raise TooManyLayers(f"{len(lowers)} layers need {len(text)} bytes of overlay mount options "
                            f"(at most {PAGE_LIMIT})")
    return text


def _mount(images_dir: Path, opts: str, target: Path) -> None:
    os.chdir(images_dir)  # this thread's own cwd (see _own_cwd)
    try:
        mounts.mount("overlay", str(target), "overlay", 0, opts)
    finally:
        os.chdir("/")


async def mount(images_dir: Path, lowers: Sequence[str], upper: Path, work: Path, target: Path) -> None:
    """Mount the layers at `target`; a cancel waits for the mount to finish
    (the caller's undo must find it there to unmount it)."""
    opts = options(lowers, upper, work)
    fut = asyncio.get_running_loop().run_in_executor(_thread, _mount, images_dir, opts, target)
    if await await_shielded(asyncio.ensure_future(fut)):
        raise asyncio.CancelledError
