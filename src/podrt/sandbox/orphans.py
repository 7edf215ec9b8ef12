"""At start, after journal replay and restore: release what belongs to no sandbox.

The journal makes this rare (a creation's resources are journaled before they
exist), but state can also be lost by hand or by an older podrt; this pass
makes "nothing leaks" hold anyway. Only podrt's own dirs are looked at.
"""

from __future__ import annotations

import json
import logging
import posixpath
import shutil
from pathlib import Path

from podrt import cgroups, mounts
from podrt.network.netns import remove_netns
from podrt.sandbox.context import SandboxDeps
from podrt.steps.sandbox.cgroups import CgroupParent

log = logging.getLogger(__name__)


def _children(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


async def release_orphans(deps: SandboxDeps, known: set[str]) -> list[str]:
    """Remove runc containers, netns pins, CNI attachments and dirs of unknown IDs."""
    released: list[str] = []

    async def attempt(what: str, coro) -> None:  # type: ignore[no-untyped-def]
        try:
            await coro
            released.append(what)
        except Exception as exc:
            log.error("could not release orphan %s: %s", what, exc)

    for name, runtime in deps.runtimes.items():
        for state_dir in _children(Path(deps.config.runtime.runtimes[name].runtime_root)):
            if state_dir.is_dir() and state_dir.name not in known:
                await attempt(f"container {state_dir.name}", _stop_delete(runtime, state_dir.name))
    for sandbox_id, cache in deps.cni.cached_sandbox_ids().items():
        if sandbox_id not in known:
            await attempt(f"CNI attachment of {sandbox_id}", deps.cni.delete_cached(cache))
    for tmp in deps.cni.cache_dir.glob(".*.tmp"):  # a write a crash cut short
        tmp.unlink(missing_ok=True)
    for pin in _children(Path(deps.config.network.netns_dir)):
        if pin.name not in known:
            await attempt(f"netns {pin}", remove_netns(pin))
    for sandbox_id, cgroups_path in _orphan_cgroups(deps, known).items():
        data = {"remove": [cgroups_path, cgroups.conmon_cgroup(posixpath.dirname(cgroups_path), sandbox_id)],
                "prune_parent": cgroups.DEFAULT_CGROUPFS_PARENT}
        await attempt(f"cgroups of {sandbox_id}", CgroupParent(deps).undo(data))
    for run_dir in _children(deps.runroot / "sandboxes"):
        if run_dir.name not in known:
            await attempt(f"run dir {run_dir}", _remove_dir(run_dir))
            await attempt(f"default log dir of {run_dir.name}", _remove_default_log(deps, run_dir.name))
    for state_dir in _children(deps.root / "sandboxes"):
        if state_dir.name not in known:
            await attempt(f"state dir {state_dir}", _remove_dir(state_dir))
    if released:
        log.warning("released %d orphaned resource(s): %s", len(released), ", ".join(released))
    return released


def _orphan_cgroups(deps: SandboxDeps, known: set[str]) -> dict[str, str]:
    """cgroupsPath of each unknown sandbox whose spec is still on disk (cgroupfs only)."""
    if deps.config.runtime.cgroup_manager != "cgroupfs":
        return {}
    found = {}
    for base in (deps.runroot / "sandboxes", deps.root / "sandboxes"):
        for d in _children(base):
            if d.name in known or d.name in found:
                continue
            try:
                found[d.name] = json.loads((d / "config.json").read_text())["linux"]["cgroupsPath"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return found


async def _stop_delete(runtime, container_id: str) -> None:  # type: ignore[no-untyped-def]
    await runtime.stop(container_id, timeout=5.0)
    await runtime.delete(container_id)


async def _remove_default_log(deps: SandboxDeps, sandbox_id: str) -> None:
    """The infra log in `<log_dir>/<id>` (a kubelet-given log dir is unknown without state)."""
    log_dir = Path(deps.config.log_dir) / sandbox_id
    (log_dir / f"{sandbox_id}.log").unlink(missing_ok=True)
    try:
        log_dir.rmdir()
    except FileNotFoundError:
        pass


async def _remove_dir(directory: Path) -> None:
    shm = directory / "shm"
    if shm.exists():
        mounts.umount(str(shm))
    shutil.rmtree(directory)
