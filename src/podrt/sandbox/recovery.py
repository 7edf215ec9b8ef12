"""After a restart: names, IDs and pods rebuilt from disk; which infras still
run (ready) asked of runc, and for pods without an infra process whether
their namespaces are still pinned; unclaimed pods' timers re-armed; then the
orphan sweep of what runc and the host hold that no pod or container owns."""

from __future__ import annotations

import asyncio
import logging
import os

from podrt.host.nspin import nsfs_mounts
from podrt.sandbox.claims import Claims
from podrt.sandbox.orphans import release_orphans
from podrt.sandbox.status import SandboxStatuses
from podrt.state.records import SandboxState
from podrt.state.store import StateStore
from podrt.steps.sandbox.context import SandboxDeps

log = logging.getLogger(__name__)


async def restore(deps: SandboxDeps, table: StateStore[SandboxState], statuses: SandboxStatuses, claims: Claims,
                  containers: set[str]) -> None:
    """`containers`: their IDs, so their runc state is not taken for an orphan's."""
    sandboxes, bad = table.read_all()
    pinned: set[str] | None = None  # nsfs mount points, read once if a pod without an infra needs them
    for path, problem in bad:
        log.error("cannot restore sandbox from %s: %s", path, problem)
    for state in sandboxes:
        for name in (state.pod_name, state.infra_name):
            deps.names.reserve(name, state.id)
        deps.ids.add(state.id)
        table.add(state.id, state)
        alive = False
        if not state.stopped and not state.infra_pid:
            pinned = await asyncio.to_thread(nsfs_mounts) if pinned is None else pinned
            alive = all(os.path.realpath(p) in pinned for p in (state.userns_path, state.netns_path, state.ipc_path, state.uts_path) if p)
        elif not state.stopped:
            runtime = deps.runtimes.get(state.runtime_handler)
            info = await runtime.state(state.id) if runtime else None
            alive = bool(info) and info is not None and info.get("status") == "running"
        statuses.set_alive(state.id, alive)
        if state.unclaimed:
            claims.arm(state.id)
        log.info("restored sandbox %s (%s%s)", state.id, "ready" if alive else "not ready",
                 ", unclaimed" if state.unclaimed else "")
    await release_orphans(deps, set(table) | set(containers))
