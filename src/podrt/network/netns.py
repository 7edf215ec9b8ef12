"""Persistent network namespaces, pinned as bind-mounted files in podrt's own dir.

A pod's netns must outlive every process in it (CNI runs before the infra
container starts and after it dies), so it is pinned by bind-mounting its nsfs
inode onto a file, like `ip netns add` does, but under podrt's directory
(default /run/podrt/netns) rather than /var/run/netns, which belongs to the admin.

Why a child process (`unshare --net=FILE true`, util-linux) and not pyroute2
or an in-process unshare(2):
- pyroute2.netns.create forks the whole daemon (multiprocessing, 'fork' mode:
  unsafe with threads) and blocks while it waits, makes the directory a shared
  bind mount of itself (one more mount to manage) and leaves the file behind
  when the mount fails;
- unshare(CLONE_NEWNET) in one of our threads would move that thread into the
  new netns; if moving it back failed, a pooled thread would keep serving the
  daemon from the wrong namespace.
A short-lived child can't change any state of the daemon; the kernel drops the
namespace when it exits unless the bind mount holds it. It costs one fork+exec:
about 4-5 ms per create and under 1 ms per remove, small next to CNI ADD
(25-80 ms).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import time
from pathlib import Path

from podrt.host import mountinfo, mounts, proc

CREATE_TIMEOUT = 10.0


class NetnsError(OSError):
    """A namespace could not be created or removed."""


def is_netns_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether an nsfs (namespace) mount sits on `path`, per /proc/self/mountinfo."""
    target = os.path.realpath(path)
    return any(e.fstype == "nsfs" and e.mount_point == target for e in mountinfo.read())


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"invalid netns name {name!r}")


def _unpin(path: Path) -> None:
    """Detach every mount on path (stacked ones too), then unlink it. Idempotent.

    Unlink is retried on EBUSY: after a cancelled create, unshare's helper child
    may still land its mount a moment after our umount.
    """
    for attempt in range(20):
        for _ in range(16):
            try:
                if not mounts.umount(str(path)):
                    break  # not a mount point (any more), or gone
            except OSError as exc:
                raise NetnsError(exc.errno, str(exc)) from None
        try:
            os.unlink(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 19:
                raise
        time.sleep(0.005)


async def create_netns(directory: Path, name: str) -> Path:
    """Create a new netns pinned at directory/name and return that path.

    All or nothing: on any failure (or cancellation) the file and any mount made
    are removed before the error propagates. An existing file is never touched
    (FileExistsError), so two sandboxes can't share a name by accident.
    """
    _check_name(name)
    unshare = shutil.which("unshare")
    if unshare is None:
        raise NetnsError(errno.ENOENT, "unshare (util-linux) not found in PATH")
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = directory / name
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    try:
        await _pin_new_netns(unshare, path)
    except BaseException:
        _unpin(path)  # synchronous on purpose: a second cancellation must not skip it
        raise
    return path


async def _pin_new_netns(unshare: str, path: Path) -> None:
    code, _, stderr = await proc.run([unshare, f"--net={path}", "true"], timeout=CREATE_TIMEOUT)
    if code != 0:
        msg = stderr.decode(errors="replace").strip().replace("\n", "; ")
        raise NetnsError(errno.EIO, f"creating netns {path}: unshare exited {code}: {msg}")
    if not is_netns_mounted(path):
        raise NetnsError(errno.EIO, f"creating netns {path}: unshare succeeded but no nsfs mount is there")


async def remove_netns(path: Path) -> None:
    """Unmount (lazily) and delete a pinned netns; no error if it is already gone.

    The namespace itself dies once nothing else (a process, another mount, an
    open fd) holds it.
    """
    await asyncio.to_thread(_unpin, Path(path))
