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

A pod without an infra process gets its IPC and UTS namespaces here too
(create_pod_namespaces): in the node's user namespace a throwaway thread
of the daemon unshares them, sets them up and pins them (host/nsthread.py:
cheaper than a child: ~1 ms a pod here); in a pod's own a held child makes them (a
threaded process cannot enter a user namespace) and a thread sets them up.
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
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from podrt.aio import await_shielded, finish_in_own_thread, finish_in_thread
from podrt.host import mountinfo, mounts, proc
from podrt.host.libc import error, libc
from podrt.host.nsthread import entering

HOLD = ("sh", "-c", "echo ready; read x")  # in its namespaces; ends at EOF on its stdin
READY_TIMEOUT = 10.0
MS_BIND = 4096


class NamespaceError(OSError):
    """A namespace could not be made, pinned or released."""


class SysctlRefused(OSError):
    """The kernel refused a sysctl's name (none such in that namespace) or its value."""


def tool(name: str) -> str:
    """The path of a util-linux program; NamespaceError when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise NamespaceError(errno.ENOENT, f"{name} (util-linux) not found in PATH")
    return path


def nsfs_mounts() -> set[str]:
    """Where nsfs (namespace) mounts sit, per /proc/self/mountinfo: the pins."""
    return {e.mount_point for e in mountinfo.read() if e.fstype == "nsfs"}


def is_ns_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether an nsfs (namespace) mount sits on `path`."""
    return os.path.realpath(path) in nsfs_mounts()


def new_pin(path: Path) -> None:
    """The empty file a namespace is bound onto; FileExistsError for one there already
    (never touched: two pods cannot share a pin by accident)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))


def pin(pid: int, kind: str, path: Path) -> None:
    """Bind namespace `kind` ("user", "net") of process `pid` onto the file `path`."""
    pin_path(f"/proc/{pid}/ns/{kind}", kind, path)


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


def sysctl_path(key: str) -> str:
    """The /proc/sys file of a (validated) sysctl name, as runc makes it: dots become slashes."""
    return "/proc/sys/" + key.replace(".", "/")


def set_up_namespaces(hostname: str, sysctls: Mapping[str, str]) -> None:
    """In the calling thread's namespaces (host/nsthread.py): the UTS one's
    hostname (unless ""), then each sysctl, in the namespace it belongs to."""
    if hostname:
        name = hostname.encode()
        if libc.sethostname(name, len(name)) != 0:
            raise error(f"sethostname {hostname!r}")
    for key, value in sysctls.items():
        try:
            fd = os.open(sysctl_path(key), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise SysctlRefused(exc.errno, f"sysctl {key}={value!r}: {exc.strerror}") from None


def pin_own(pins: Mapping[str, Path]) -> None:
    """Bind the calling thread's namespaces of these kinds onto their pins (host/nsthread.py)."""
    for kind, path in pins.items():
        pin_path(f"/proc/thread-self/ns/{kind}", kind, path)


def pin_path(source: str, kind: str, path: Path) -> None:
    try:
        mounts.mount(source, str(path), "", MS_BIND)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"pinning the {kind} namespace at {path}: {exc.strerror}") from None


async def create_pod_namespaces(pins: Mapping[str, Path], *, owner: Path | None, netns: Path | None,
                                hostname: str, sysctls: Mapping[str, str]) -> None:
    """New namespaces of the kinds `pins` names ("ipc", "uts"), each pinned at
    its path, with `hostname` set in the UTS one and `sysctls` written, each in
    its namespace (net.* in the pinned `netns`): what an infra process held,
    and runc set up in it, without the process. Made by a throwaway thread of
    the daemon (nsthread); in the pinned user namespace `owner` (a pod's own:
    its processes must be able to join them) by a held child, then set up by a
    thread that joins them. All or nothing: SysctlRefused (nothing left) for a
    sysctl the kernel refuses."""
    made: list[Path] = []
    name = hostname if "uts" in pins else ""  # no UTS namespace of its own: the host's name stays

    def make_pins() -> None:  # files' creation: off the loop (ext4 may wait for its journal)
        for path in pins.values():
            new_pin(path)
            made.append(path)

    try:
        joined = [("net", str(netns))] if netns is not None else []
        if owner is None:
            def job() -> None:
                make_pins()
                set_up_namespaces(name, sysctls)
                pin_own(pins)
            await finish_in_own_thread(entering(job, enter=joined, new=list(pins)))
        else:
            await finish_in_thread(make_pins)
            argv = [tool("nsenter"), f"--user={owner}", "--", tool("unshare"), *(f"--{kind}" for kind in pins), "--"]
            async with holding(argv, f"creating {'/'.join(pins)} namespaces in user namespace {owner}") as pid:
                for kind, path in pins.items():
                    pin(pid, kind, path)
            joined += [(kind, str(path)) for kind, path in pins.items()]
            await finish_in_own_thread(entering(lambda: set_up_namespaces(name, sysctls), enter=joined))
    except BaseException:
        for path in made:
            await finish_in_thread(unpin, path)  # waited out however often we are cancelled: never skipped
        raise
