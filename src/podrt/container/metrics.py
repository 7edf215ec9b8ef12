"""What ListPodSandboxMetrics reports, read from the host: for every ready pod
its interfaces' counters (network metrics are the pod's, as in CRI-O), and for
each of its running containers its cgroup (container/stats.read), and where
the groups asked for need them, its writable layer with the filesystem under
it, and its processes' open files. One worker thread reads them all: the
event loop never waits on a cgroup file."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import attrs

from podrt.container import stats
from podrt.container.status import ContainerStatuses, ContainerView
from podrt.host import cgroups, procfs
from podrt.model.container import ContainerStatus
from podrt.sandbox.manager import SandboxView
from podrt.steps.container.context import ContainerDeps

T = TypeVar("T")


@attrs.frozen
class Filesystem:
    """The filesystem of the writable layers (statvfs), as CRI-O reports it beside a container's use."""

    capacity_bytes: int
    inodes_total: int
    inodes_free: int


@attrs.frozen
class Processes:
    """Its processes (cgroup.procs, as cAdvisor counts them) and their open files."""

    count: int
    descriptors: int
    sockets: int


@attrs.frozen
class ContainerReading:
    view: ContainerView
    sample: stats.Sample  # its writable layer counted only with the "disk" group
    filesystem: Filesystem | None = None  # "disk"
    processes: Processes | None = None  # "process"


@attrs.frozen
class PodReading:
    view: SandboxView
    at: int  # ns since the epoch
    interfaces: tuple[procfs.NetDev, ...]  # "network"; loopback left out, as cAdvisor does
    containers: tuple[ContainerReading, ...]


def _filesystem(path: str) -> Filesystem | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return Filesystem(st.f_blocks * st.f_frsize, st.f_files, st.f_ffree)


def _processes(cgroups_path: str) -> Processes:
    pids = cgroups.procs(cgroups_path)
    files = [procfs.open_files(pid) for pid in pids]
    return Processes(len(pids), sum(f[0] for f in files), sum(f[1] for f in files))


class PodMetrics:
    """The readings of one ListPodSandboxMetrics pass."""

    def __init__(self, deps: ContainerDeps, statuses: ContainerStatuses) -> None:
        self.deps, self._statuses = deps, statuses

    async def read(self, pods: Iterable[SandboxView], groups: frozenset[str], render: Callable[[PodReading], T]) -> list[T]:
        """Every pod of `pods` with its running containers, each reading handed
        to `render` (the caller's encoding) in the same worker thread."""
        pods = list(pods)
        wanted = {p.state.id for p in pods}
        running: dict[str, list[ContainerView]] = {}
        for v in self._statuses.list(lambda v: v.status is ContainerStatus.RUNNING and v.state.sandbox_id in wanted):
            running.setdefault(v.state.sandbox_id, []).append(v)
        return await asyncio.to_thread(lambda: [render(self._pod(p, running.get(p.state.id, []), groups)) for p in pods])

    def _pod(self, pod: SandboxView, containers: list[ContainerView], groups: frozenset[str]) -> PodReading:
        """Blocking."""
        found: list[procfs.NetDev] = []
        if "network" in groups and pod.state.netns_path:
            found = procfs.net_dev(pod.state.infra_pid, pod.state.netns_path) or []
        readings = tuple(self._container(v, groups) for v in containers)
        return PodReading(pod, time.time_ns(), tuple(i for i in found if i.name != "lo"), readings)

    def _container(self, view: ContainerView, groups: frozenset[str]) -> ContainerReading:
        s = view.state
        upper = self.deps.container_dir(s.id) / "rootfs" / "upper"
        disk = "disk" in groups
        sample = stats.read(s.id, s.cgroups_path, upper if disk else None)
        return ContainerReading(view, sample, _filesystem(str(upper)) if disk else None,
                                _processes(s.cgroups_path) if "process" in groups else None)
