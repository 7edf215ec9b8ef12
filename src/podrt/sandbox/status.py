"""PodSandboxStatus and ListPodSandbox: a pod's view (ready or not), its
verbose info, and the netns PortForward enters."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from podrt.errors import FailedPrecondition
from podrt.host.inotify import DirWatches
from podrt.state.records import SandboxState
from podrt.state.registry import Registry
from podrt.steps.sandbox.context import SandboxDeps
from podrt.steps.spec_files import spec_text

log = logging.getLogger(__name__)


@attrs.frozen
class SandboxView:
    state: SandboxState
    ready: bool


class SandboxStatuses:
    """Views of the pods in the registry. Ready: not stopped, its infra seen
    running (at creation, or by runc at restore) and without an exit file since.

    The exit file is watched (inotify: one instance, a watch on each live
    infra's exit dir), not looked for at each view: a list of 1000 pods made
    1000 stats. A pod whose dir cannot be watched (no watch left) is looked
    at each view, as before. A pod without an infra process (its namespaces
    pinned) is ready until stopped. `version` changes with any pod's readiness."""

    def __init__(self, deps: SandboxDeps, table: Registry[SandboxState]) -> None:
        self.deps, self._table = deps, table
        self._alive: dict[str, bool] = {}
        self._exits = DirWatches(self._written)
        self._unwatched: set[str] = set()  # alive pods whose exit file is stat'ed at each view
        self.version = 0

    def set_alive(self, sandbox_id: str, alive: bool) -> None:
        self._unwatch(sandbox_id)
        self._alive[sandbox_id] = alive
        self.version += 1
        if alive:
            self._watch(sandbox_id)

    def forget(self, sandbox_id: str) -> None:
        self._unwatch(sandbox_id)
        self._alive.pop(sandbox_id, None)
        self.version += 1

    def close(self) -> None:
        """At shutdown: the watches go (the next start asks runc again)."""
        self._exits.close()

    def _exit_file(self, sandbox_id: str) -> Path:
        return self.deps.run_dir(sandbox_id) / "exits" / sandbox_id

    def _watch(self, sandbox_id: str) -> None:
        """Watched from now on, then looked at once: an exit before the watch is seen too."""
        try:
            self._exits.add(sandbox_id, self._exit_file(sandbox_id).parent)
        except FileNotFoundError:
            return  # no exit dir: no infra process of its own, nothing to exit
        except OSError as exc:
            log.warning("pod sandbox %s: its infra's exit is looked for at each status (%s)", sandbox_id, exc)
            self._unwatched.add(sandbox_id)
            return
        if self._exit_file(sandbox_id).exists():
            self._exited(sandbox_id)

    def _unwatch(self, sandbox_id: str) -> None:
        self._exits.remove(sandbox_id)
        self._unwatched.discard(sandbox_id)

    def _written(self, sandbox_id: str | None, name: str | None) -> None:
        """The watch's callback; (None, None): events were lost, every watched pod is looked at."""
        if sandbox_id is None:
            for i in [i for i in self._alive if i in self._exits and self._exit_file(i).exists()]:
                self._exited(i)
        elif name == sandbox_id:
            self._exited(sandbox_id)

    def _exited(self, sandbox_id: str) -> None:
        log.debug("pod sandbox %s: its infra exited", sandbox_id)
        self._unwatch(sandbox_id)
        self._alive[sandbox_id] = False
        self.version += 1

    def list_version(self) -> tuple[int, int]:
        """Changes with every pod created, changed or removed, and with any pod's readiness (cri/listindex.py)."""
        return self._table.version, self.version

    def view(self, sandbox_id: str) -> SandboxView:
        state = self._table.get(sandbox_id)
        ready = not state.stopped and self._alive.get(sandbox_id, False) and not (
            sandbox_id in self._unwatched and self._exit_file(sandbox_id).exists())
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
        """PodSandboxStatus' verbose info, which critest asks at every status:
        the OCI spec as written, and what podrt knows of the infra and the
        network (runc is not asked, the netns not entered: containerd too
        answers it from memory)."""
        s = view.state
        return {
            "runtimeSpec": await spec_text(self.deps.sandbox_dir(s.id) / "config.json"),  # its JSON text
            "runtimeState": ({"id": s.id, "pid": s.infra_pid, "status": "running" if view.ready else "stopped"}
                             if s.infra_pid else None),  # a pod without an infra process has none
            "pid": s.infra_pid,
            "netnsPath": s.netns_path,
            "ips": s.ips,
        }
