"""Persistent network namespaces, pinned as bind-mounted files in podrt's own dir.

A pod's netns must outlive every process in it (CNI runs before the infra
container starts and after it dies), so it is pinned by bind-mounting its nsfs
inode onto a file, like `ip netns add` does, but under podrt's directory
(default /run/podrt/netns) rather than /var/run/netns, which belongs to the admin.

Made by a throwaway thread of the daemon (host/nsthread.py): it unshares
a new netns, brings its loopback up and binds /proc/thread-self/ns/net onto
the pin, then ends; the kernel drops the namespace with it unless the bind
mount holds it. No pooled thread ever changes namespace (one that did would
serve the daemon from the wrong one), nothing forks: pyroute2.netns.create
forks the whole daemon (multiprocessing, 'fork' mode: unsafe with threads),
and a `unshare --net=FILE` child cost a fork+exec (5-20 ms on a loaded
machine, serial in RunPodSandbox before CNI ADD).

A pod with a user namespace gets a netns that namespace owns (runc joins the
user namespace first, then the netns, and needs CAP_SYS_ADMIN over it; so
does mounting /sys there): made by `unshare --net` run through `nsenter` into
the pinned user namespace, and pinned from here (host/nspin.py).
"""

from __future__ import annotations

from pathlib import Path

from podrt.aio import finish_in_own_thread, finish_in_thread
from podrt.host.nspin import NamespaceError, holding, is_ns_mounted, new_pin, pin, pin_own, remove_pin, tool, unpin
from podrt.host.nsthread import entering
from podrt.network.links import loopback_up

NetnsError = NamespaceError  # a namespace could not be created or removed
is_netns_mounted = is_ns_mounted


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"invalid netns name {name!r}")


async def create_netns(directory: Path, name: str, owner: Path | None = None) -> Path:
    """Create a new netns pinned at directory/name, its loopback up, and return that path.

    All or nothing: on any failure (or cancellation) the file and any mount made
    are removed before the error propagates. An existing file is never touched
    (FileExistsError), so two sandboxes can't share a name by accident.
    `owner`: the pinned user namespace that owns the new netns (a pod with a
    user namespace: its processes, root in it, may then join and configure it).
    """
    _check_name(name)
    path = directory / name
    made = False

    def make_pin() -> None:  # a file's creation: off the loop (ext4 may wait for its journal)
        nonlocal made
        new_pin(path)
        made = True

    try:
        if owner is None:
            def job() -> None:
                make_pin()
                loopback_up()
                pin_own({"net": path})
            await finish_in_own_thread(entering(job, new=["net"]))
        else:
            await finish_in_thread(make_pin)
            argv = [tool("nsenter"), f"--user={owner}", "--", tool("unshare"), "--net", "--"]
            async with holding(argv, f"creating netns {path} in user namespace {owner}") as pid:
                pin(pid, "net", path)
            await finish_in_own_thread(entering(loopback_up, enter=[("net", str(path))]))
    except BaseException:
        if made:  # settled: the pin's maker is waited out however often we are cancelled
            await finish_in_thread(unpin, path)  # waited out however often we are cancelled: never skipped
        raise
    return path


remove_netns = remove_pin  # unmount (lazily) and delete; no error if it is already gone
