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

A pod with a user namespace gets a netns that namespace owns (runc joins the
user namespace first, then the netns, and needs CAP_SYS_ADMIN over it; so
does mounting /sys there): made by `unshare --net` run through `nsenter` into
the pinned user namespace, and pinned from here (host/nspin.py).
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

from podrt.aio import finish_in_thread
from podrt.host import proc
from podrt.host.nspin import NamespaceError, holding, is_ns_mounted, new_pin, pin, remove_pin, tool, unpin

CREATE_TIMEOUT = 10.0
NetnsError = NamespaceError  # a namespace could not be created or removed
is_netns_mounted = is_ns_mounted


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"invalid netns name {name!r}")


async def create_netns(directory: Path, name: str, owner: Path | None = None) -> Path:
    """Create a new netns pinned at directory/name and return that path.

    All or nothing: on any failure (or cancellation) the file and any mount made
    are removed before the error propagates. An existing file is never touched
    (FileExistsError), so two sandboxes can't share a name by accident.
    `owner`: the pinned user namespace that owns the new netns (a pod with a
    user namespace: its processes, root in it, may then join and configure it).
    """
    _check_name(name)
    unshare = tool("unshare")
    path = directory / name
    new_pin(path)
    try:
        if owner is None:
            await _pin_new_netns(unshare, path)
        else:
            argv = [tool("nsenter"), f"--user={owner}", "--", unshare, "--net", "--"]
            async with holding(argv, f"creating netns {path} in user namespace {owner}") as pid:
                pin(pid, "net", path)
    except BaseException:
        await finish_in_thread(unpin, path)  # waited out however often we are cancelled: never skipped
        raise
    return path


async def _pin_new_netns(unshare: str, path: Path) -> None:
    code, _, stderr = await proc.run([unshare, f"--net={path}", "true"], timeout=CREATE_TIMEOUT)
    if code != 0:
        msg = stderr.decode(errors="replace").strip().replace("\n", "; ")
        raise NetnsError(errno.EIO, f"creating netns {path}: unshare exited {code}: {msg}")
    if not await asyncio.to_thread(is_netns_mounted, path):  # reads /proc/self/mountinfo: a line per mount
        raise NetnsError(errno.EIO, f"creating netns {path}: unshare succeeded but no nsfs mount is there")


remove_netns = remove_pin  # unmount (lazily) and delete; no error if it is already gone
