"""Namespaces pinned to files: a bind mount of /proc/<pid>/ns/<kind> keeps a
namespace after every process in it is gone, as `ip netns add` does.

A namespace that needs setting up from outside (a user namespace's uid_map
and gid_map) is made by a helper child that waits (`holding`): util-linux's
`unshare` (or `nsenter` into a namespace, then `unshare`) makes it, runs a
shell that says "ready" and reads its stdin; the daemon writes what it must
and binds the namespace onto its pin, then closes the stdin, which ends the
child. Nothing of the daemon itself changes namespace, and nothing forks the
daemon. (util-linux's own `--map-users` needs newuidmap and /etc/subuid, and
its own pinning, `--user=FILE`, fails with EPERM for a user namespace.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from podrt.aio import await_shielded, finish_in_thread
from podrt.host import mountinfo, mounts, proc

HOLD = ("sh", "-c", "echo ready; read x")  # in its namespaces; ends at EOF on its stdin
READY_TIMEOUT = 10.0
MS_BIND = 4096


class NamespaceError(OSError):
    """A namespace could not be made, pinned or released."""


def tool(name: str) -> str:
    """The path of a util-linux program; NamespaceError when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise NamespaceError(errno.ENOENT, f"{name} (util-linux) not found in PATH")
    return path


def is_ns_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether an nsfs (namespace) mount sits on `path`, per /proc/self/mountinfo."""
    target = os.path.realpath(path)
    return any(e.fstype == "nsfs" and e.mount_point == target for e in mountinfo.read())


def new_pin(path: Path) -> None:
    """The empty file a namespace is bound onto; FileExistsError for one there already
    (never touched: two pods cannot share a pin by accident)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))


def pin(pid: int, kind: str, path: Path) -> None:
    """Bind namespace `kind` ("user", "net") of process `pid` onto the file `path`."""
    try:
        mounts.mount(f"/proc/{pid}/ns/{kind}", str(path), "", MS_BIND)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"pinning the {kind} namespace at {path}: {exc.strerror}") from None


def unpin(path: Path) -> None:
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
                raise NamespaceError(exc.errno, str(exc)) from None
        try:
            os.unlink(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 19:
                raise
        time.sleep(0.005)


@contextlib.asynccontextmanager
async def holding(argv: Sequence[str], what: str) -> AsyncIterator[int]:
    """The pid of a child `argv` + HOLD once it is in its namespaces; it is
    ended (stdin closed, then its group killed if need be) when the block ends."""
    child, watch = await proc.spawn([*argv, *HOLD], stdin=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), READY_TIMEOUT)
        if line != b"ready\n":
            await asyncio.wait({watch.exited}, timeout=1.0)
            assert child.stderr is not None
            msg = (await child.stderr.read(4096)).decode(errors="replace").strip().replace("\n", "; ")
            raise NamespaceError(errno.EIO, f"{what}: {argv[0]} exited {child.returncode}: {msg}")
        yield child.pid
    finally:
        ending = asyncio.ensure_future(_end(child, watch.exited))
        if await await_shielded(ending):
            raise asyncio.CancelledError


async def _end(child: asyncio.subprocess.Process, exited: asyncio.Future[None]) -> None:
    if child.stdin is not None:
        child.stdin.close()
    if not (await asyncio.wait({exited}, timeout=1.0))[0]:
        proc.kill_group(child.pid, signal.SIGKILL)
        await asyncio.wait({exited})
    await child.wait()  # reaps it and closes its pipes


async def create_userns(path: Path, uid_map: str, gid_map: str) -> None:
    """A new user namespace with these maps (as /proc/<pid>/uid_map takes
    them), pinned at `path`. All or nothing, like network.netns.create_netns."""
    unshare = tool("unshare")
    new_pin(path)
    try:
        async with holding([unshare, "--user", "--"], f"creating user namespace {path}") as pid:
            for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
                with open(f"/proc/{pid}/{name}", "w") as f:  # one write(2), as the kernel wants
                    f.write(text)
            pin(pid, "user", path)
    except BaseException:
        await finish_in_thread(unpin, path)  # waited out however often we are cancelled: never skipped
        raise


async def remove_pin(path: Path) -> None:
    """Unpin and delete; no error if it is already gone. The namespace dies
    once nothing else (a process, an open fd, a namespace it owns) holds it."""
    await asyncio.to_thread(unpin, Path(path))
