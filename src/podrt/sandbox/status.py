"""PodSandboxStatus and ListPodSandbox: a pod's view (ready or not), its
verbose info, and the netns PortForward enters."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from podrt.errors import FailedPrecondition
from podrt.network import links
from podrt.state.records import SandboxState
from podrt.state.registry import Registry
from podrt.steps.sandbox.context import SandboxDeps


@attrs.frozen
class SandboxView:
    state: SandboxState
    ready: bool


class SandboxStatuses:
    """Views of the pods in the registry. Ready: not stopped, its infra seen
    running (at creation, or by runc at restore) and without an exit file since;
    a pod without an infra process, its namespaces pinned (at creation or restore)."""

    def __init__(self, deps: SandboxDeps, table: Registry[SandboxState]) -> None:
        self.deps, self._table = deps, table
        self._alive: dict[str, bool] = {}

    def set_alive(self, sandbox_id: str, alive: bool) -> None:
        self._alive[sandbox_id] = alive

    def forget(self, sandbox_id: str) -> None:
        self._alive.pop(sandbox_id, None)

    def _exit_file(self, sandbox_id: str) -> Path:
        return self.deps.run_dir(sandbox_id) / "exits" / sandbox_id

    def view(self, sandbox_id: str) -> SandboxView:
        state = self._table.get(sandbox_id)
        ready = not state.stopped and self._alive.get(sandbox_id, False) and not self._exit_file(sandbox_id).exists()
        return SandboxView(state, ready)

    def list(self, match: Callable[[SandboxView], bool] = lambda _v: True,
             ids: Iterable[str] | None = None) -> builtins.list[SandboxView]:
        return self._table.views(self.view, match, ids)

    def forward_netns(self, id_prefix: str) -> tuple[str, str]:
        """(full ID, netns path) of a ready pod, for PortForward; the path is
        "" for a pod on the host's network, whose localhost is the host's."""
        sandbox_id = self._table.resolve(id_prefix)
        view = self.view(sandbox_id)
        if not view.ready:
            raise FailedPrecondition(f"pod sandbox {sandbox_id} is not ready: no port forwarding into it")
        return sandbox_id, view.state.netns_path or ""

    async def inspect(self, view: SandboxView) -> dict[str, object]:
        """PodSandboxStatus' verbose info: the OCI spec and runc's view of the infra."""
        spec_path = self.deps.sandbox_dir(view.state.id) / "config.json"
        runtime = self.deps.runtimes.get(view.state.runtime_handler)
        spec = await asyncio.to_thread(spec_path.read_text) if spec_path.exists() else None
        info: dict[str, object] = {
            "runtimeSpec": json.loads(spec) if spec else None,
            "runtimeState": await runtime.state(view.state.id) if runtime and view.state.infra_pid else None,
            "pid": view.state.infra_pid,
            "netnsPath": view.state.netns_path,
            "ips": view.state.ips,
        }
        if view.state.netns_path and not view.state.stopped:
            try:
                found = await asyncio.to_thread(links.interfaces, view.state.netns_path)
                info["interfaces"] = [attrs.asdict(i) for i in found]
            except Exception as exc:  # best effort (pyroute2's NetlinkError is no OSError): the status is answered
                info["interfaces"] = {"error": str(exc)}
        return info
