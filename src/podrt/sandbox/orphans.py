"""At start, after journal replay and restore: release what belongs to no sandbox.

The journal makes this rare (a creation's resources are journaled before they
exist), but state can also be lost by hand or by an older podrt, and a
container creation's journal is written without fsyncs (state.journal's
`volatile`): what a power loss leaves of a creation cut before its record,
its dirs, is released here. This pass makes "nothing leaks" hold anyway. Only podrt's own dirs are looked at, and
of the runtime's containers only those whose bundle is one of this daemon's
run dirs: a runtime root shared with another daemon (or set to runc's own
/run/runc) holds containers that are not ours to stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from podrt.host import cgroups, idmap, mountinfo, mounts, procfs
from podrt.host.nspin import remove_pin
from podrt.network.netns import remove_netns
from podrt.oci.runtime import OciRuntime
from podrt.sandbox.naming import is_id
from podrt.state.store import RETIRED_FILE, STATE_FILE
from podrt.steps.sandbox.cgroups import CgroupParent
from podrt.steps.sandbox.context import SandboxDeps
from podrt.steps.sandbox.podns import PINNED_KINDS
from podrt.steps.sandbox.storage import remove_own_log_dir

log = logging.getLogger(__name__)


def _children(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


async def release_orphans(deps: SandboxDeps, known: set[str]) -> list[str]:
    """Remove runc containers, netns pins, CNI attachments, cgroups and dirs of unknown IDs
    (a container's: only with no record in its state dir, state.json or removing.json)."""
    released: list[str] = []

    async def attempt(what: str, coro: Awaitable[Any]) -> None:
        try:
            if await coro is not False:  # False: looked at, not ours
                released.append(what)
        except Exception as exc:
            log.error("could not release orphan %s: %s", what, exc)

    lost_pods: dict[str, str] = {}  # infras released below: sandbox id -> cgroupsPath ("": systemd's)
    for runtime in deps.runtimes.values():
        for state_dir in _children(Path(runtime.runtime_root)):
            if state_dir.is_dir() and state_dir.name not in known:
                await attempt(f"container {state_dir.name}", _release_container(deps, runtime, state_dir.name, lost_pods))
    for sandbox_id, cache in deps.cni.cached_sandbox_ids().items():
        if sandbox_id not in known:
            await attempt(f"CNI attachment of {sandbox_id}", deps.cni.delete_cached(cache))
    for tmp in deps.cni.cache_dir.glob(".*.tmp"):  # a write a crash cut short
        tmp.unlink(missing_ok=True)
    for pin in _children(Path(deps.config.network.netns_dir)):
        if is_id(pin.name) and pin.name not in known:  # a shared dir (/run/netns) holds others' pins too
            await attempt(f"netns {pin}", remove_netns(pin))
    for pin in _children(Path(deps.config.runtime.userns_dir)):
        if is_id(pin.name) and pin.name not in known:
            await attempt(f"user namespace {pin}", remove_pin(pin))
    for kind in PINNED_KINDS:  # the IPC and UTS namespaces of pods without an infra
        for pin in _children(deps.ns_pin_dir(kind)):
            if pin.name not in known:
                await attempt(f"{kind} namespace {pin}", remove_pin(pin))
    for owned in _children(deps.runroot / "idmap"):  # pods' and containers'
        if owned.name not in known:
            await attempt(f"ID-mapped mounts {owned}", asyncio.to_thread(_release_idmaps, owned))
    pod_cgroups = {i: p for i, p in lost_pods.items() if p} | _orphan_cgroups(deps, known)  # a spec on disk wins
    for sandbox_id, cgroups_path in pod_cgroups.items():
        data = {"remove": [cgroups_path, cgroups.conmon_cgroup(posixpath.dirname(cgroups_path), sandbox_id)],
                "prune_parent": cgroups.DEFAULT_CGROUPFS_PARENT}
        await attempt(f"cgroups of {sandbox_id}", CgroupParent(deps).undo(data))
    lost_logs = set(lost_pods)
    for run_dir in _children(deps.runroot / "sandboxes"):
        if run_dir.name not in known:
            await attempt(f"run dir {run_dir}", asyncio.to_thread(_remove_tree, run_dir))
            lost_logs.add(run_dir.name)
    for sandbox_id in sorted(lost_logs):
        await attempt(f"default log dir of {sandbox_id}", _remove_default_log(deps, sandbox_id))
    for state_dir in _children(deps.root / "sandboxes"):
        if state_dir.name not in known:
            await attempt(f"state dir {state_dir}", asyncio.to_thread(_remove_tree, state_dir))
    for base in (deps.containers_dir, deps.container_runs_dir):  # creations cut before their record
        for cut in _children(base):
            if is_id(cut.name) and cut.name not in known and not _has_record(deps.container_dir(cut.name)):
                await attempt(f"dir {cut} of a container never created", asyncio.to_thread(_remove_tree, cut))
    if released:
        log.warning("released %d orphaned resource(s): %s", len(released), ", ".join(released))
    return released


async def _release_container(deps: SandboxDeps, runtime: OciRuntime, container_id: str,
                             lost_pods: dict[str, str]) -> bool:
    """Stop and delete a container of this daemon's; False (untouched) for another's.

    Ours: its bundle is this daemon's run dir for that ID (a pod's infra, or a
    container: ContainerDeps.run_dir). An infra's cgroupsPath goes into
    `lost_pods`, read while it still runs: its spec may be lost with its dirs,
    and its conmon cgroup and default log dir are found from it."""
    infra_dir, container_dir = deps.run_dir(container_id), deps.container_run_dir(container_id)
    state = await runtime.state(container_id)
    if state is None:  # no state.json: a `runc create` cut down; ours if its run dir is
        if infra_dir.exists() or container_dir.exists():
            await runtime.delete(container_id)  # --force removes the half-made state dir
            return True
        log.debug("%s knows no container %s: left alone", runtime.handler_name, container_id)
        return False
    bundle = os.path.realpath(str(state.get("bundle") or "/nonexistent"))
    infra = bundle == os.path.realpath(infra_dir)
    if not infra and bundle != os.path.realpath(container_dir):
        log.debug("container %s is not this daemon's (bundle %s, runroot %s): left alone",
                  container_id, bundle, deps.runroot)
        return False
    if infra:  # with systemd, systemd owns the tree: no cgroups of ours to remove ("")
        cgroupfs = deps.config.runtime.cgroup_manager == "cgroupfs"
        lost_pods[container_id] = _infra_cgroups_path(container_id, int(state.get("pid") or 0)) if cgroupfs else ""
    await runtime.stop(container_id, timeout=5.0)
    await runtime.delete(container_id)
    return True


def _infra_cgroups_path(sandbox_id: str, pid: int) -> str:
    """The pod's cgroupsPath (cgroupfs) from its running infra's /proc/<pid>/cgroup;
    podrt's default parent when it no longer runs (its cgroup is then runc's to remove,
    and a conmon cgroup under a kubelet's parent cannot be found without the spec)."""
    name = f"podrt-{sandbox_id}"
    for line in ((procfs.cgroup(pid) or "") if pid > 0 else "").splitlines():
        path = line.split(":", 2)[-1]
        if posixpath.basename(path) == name:
            return path
    return posixpath.join(cgroups.DEFAULT_CGROUPFS_PARENT, name)


def _orphan_cgroups(deps: SandboxDeps, known: set[str]) -> dict[str, str]:
    """cgroupsPath of each unknown sandbox whose spec is still on disk (cgroupfs only)."""
    if deps.config.runtime.cgroup_manager != "cgroupfs":
        return {}
    found: dict[str, str] = {}
    for base in (deps.runroot / "sandboxes", deps.root / "sandboxes"):
        for d in _children(base):
            if d.name in known or d.name in found:
                continue
            try:
                found[d.name] = json.loads((d / "config.json").read_text())["linux"]["cgroupsPath"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return found


def _release_idmaps(owned: Path) -> None:
    for directory in _children(owned):
        idmap.release(directory)
    owned.rmdir()


async def _remove_default_log(deps: SandboxDeps, sandbox_id: str) -> None:
    """podrt's own log dir `<log_dir>/<id>` (a kubelet-given log dir is unknown without state)."""
    remove_own_log_dir(deps.own_log_dir(sandbox_id))


def _has_record(container_dir: Path) -> bool:
    """A saved container (its record unreadable, maybe), or one whose removal is under way:
    not the sweep's (a creation's journal is volatile: state.journal). An empty record is
    one a power loss cut before its data reached the disk: never committed (steps/container/state.py)."""
    record = container_dir / STATE_FILE
    return (record.exists() and record.stat().st_size > 0) or (container_dir / RETIRED_FILE).exists()


def _remove_tree(directory: Path) -> None:
    """A dir, and first whatever is still mounted below it (a pod's shm, a container's overlay or image volume)."""
    below = str(directory) + "/"
    for point in sorted((e.mount_point for e in mountinfo.read() if e.mount_point.startswith(below)),
                        key=len, reverse=True):
        while mounts.umount(point):
            pass
    shutil.rmtree(directory)
