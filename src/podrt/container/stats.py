"""Resource usage of containers (ContainerStats) and pods (PodSandboxStats):
their cgroups (podrt.host.cgroups, on v1 or v2) and their writable layers. CPU use
as a rate (nano cores) needs an earlier sample: the first read of a container
has none, as with containerd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

from podrt.container.status import ContainerStatuses, ContainerView
from podrt.host import cgroups
from podrt.host.fsutil import usage as disk_usage
from podrt.network import links
from podrt.network.links import Interface
from podrt.sandbox.manager import SandboxView
from podrt.steps.container.context import ContainerDeps


@attrs.frozen
class Sample:
    container_id: str
    at: int  # ns since the epoch
    cgroup: cgroups.Usage | None  # None: no cgroup (not started yet, or exited and removed)
    writable_bytes: int
    writable_inodes: int
    nano_cores: int | None = None


def read(container_id: str, cgroups_path: str, upper: Path | None) -> Sample:
    """Blocking (a cgroup read, a walk of the writable layer unless `upper` is
    None): run it in a thread."""
    used, inodes = disk_usage([upper]) if upper is not None else (0, 0)
    return Sample(container_id, time.time_ns(), cgroups.read_usage(cgroups_path), used, inodes)


class CpuRates:
    """The last CPU sample of each container or pod, to turn cumulative time into a rate."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def rate(self, key: str, at: int, usage: cgroups.Usage | None) -> int | None:
        if usage is None:
            return None
        before = self._last.get(key)
        self._last[key] = (at, usage.cpu_ns)
        if before is None or at <= before[0] or usage.cpu_ns < before[1]:
            return None
        return (usage.cpu_ns - before[1]) * 1_000_000_000 // (at - before[0])

    def forget(self, key: str) -> None:
        self._last.pop(key, None)


@attrs.frozen
class PodSample:
    sandbox_id: str
    at: int
    cgroup: cgroups.Usage | None  # the pod's cgroup parent, or its cgroups summed (pod_usage)
    interfaces: tuple[Interface, ...]
    containers: tuple[Sample, ...]
    nano_cores: int | None = None


def pod_usage(cgroup: tuple[str, str] | None, containers: list[Sample]) -> cgroups.Usage | None:
    """`cgroup`: the pod's cgroup parent and its infra's cgroupsPath (None once
    stopped). A pod with a cgroup parent of its own (the kubelet's `pod<uid>`):
    that parent's totals, which count its containers and its infra (and conmon,
    with the cgroupfs manager, which puts conmon there), as the kubelet reads a
    pod's cgroup. Else (podrt's shared default parent, or stopped): its infra's
    and its containers' cgroups summed."""
    if cgroup and not cgroups.shared_parent(cgroup[0]):
        own = cgroups.read_usage(cgroups.parent_dir(cgroup[0]))
        if own is not None:
            return own
    infra = cgroups.read_usage(cgroup[1]) if cgroup else None
    return cgroups.total([u for u in (infra, *(c.cgroup for c in containers)) if u is not None])


def pod_sample(sandbox_id: str, cgroup: tuple[str, str] | None, netns_path: str, containers: list[Sample]) -> PodSample:
    """Blocking (cgroup reads, netlink in the pod's netns): run it in a thread."""
    total = pod_usage(cgroup, containers)
    found: tuple[Interface, ...] = ()
    if netns_path:
        try:
            found = tuple(links.interfaces(netns_path))
        except Exception:  # netlink trouble costs the network part only (NetlinkError is no OSError)
            found = ()
    return PodSample(sandbox_id, time.time_ns(), total, found, tuple(containers))


class ContainerUsage:
    """ContainerStats, ListContainerStats, PodSandboxStats: samples, and CPU rates between them."""

    def __init__(self, deps: ContainerDeps, statuses: ContainerStatuses) -> None:
        self.deps, self._statuses = deps, statuses
        self._rates = CpuRates()

    def forget(self, container_id: str) -> None:
        """A removed container's last sample goes with it."""
        self._rates.forget(container_id)

    async def stats(self, views: Iterable[ContainerView]) -> list[tuple[ContainerView, Sample]]:
        """Usage of each container (cgroup and writable layer), read in one worker thread."""
        views = list(views)
        samples = await asyncio.to_thread(lambda: [
            read(v.state.id, v.state.cgroups_path, self.deps.container_dir(v.state.id) / "rootfs" / "upper")
            for v in views])
        return [(v, attrs.evolve(x, nano_cores=self._rates.rate(x.container_id, x.at, x.cgroup)))
                for v, x in zip(views, samples)]

    async def pod_stats(self, pods: Iterable[SandboxView]
                        ) -> list[tuple[SandboxView, PodSample, list[tuple[ContainerView, Sample]]]]:
        """Each pod's usage (pod_usage) and its network interfaces. The
        containers are listed once for all the pods and read in one thread, the
        pods in another: per pod, a list of all containers made 1000 pods cost 6 s."""
        pods = list(pods)
        wanted = {pod.state.id for pod in pods}
        mine: dict[str, list[tuple[ContainerView, Sample]]] = {pod_id: [] for pod_id in wanted}
        for view, got in await self.stats(self._statuses.list(lambda v: v.state.sandbox_id in wanted)):
            mine[view.state.sandbox_id].append((view, got))

        def one(pod: SandboxView) -> PodSample:
            cgroup = None if pod.state.stopped else (pod.state.cgroup_parent, pod.state.cgroups_path)
            netns = "" if pod.state.stopped else pod.state.netns_path or ""
            return pod_sample(pod.state.id, cgroup, netns, [s for _, s in mine[pod.state.id]])

        samples = await asyncio.to_thread(lambda: [one(pod) for pod in pods])
        return [(pod, attrs.evolve(x, nano_cores=self._rates.rate(f"pod:{pod.state.id}", x.at, x.cgroup)), mine[pod.state.id])
                for pod, x in zip(pods, samples)]
