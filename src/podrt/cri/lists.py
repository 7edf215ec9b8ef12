"""What each List*/Stream* pair of RuntimeService answers: the items its filter
selects, as the entries (cri/listcache.py) that one List message or a stream
of chunks is joined from. Both RPCs of a pair call the same function, so
they list the same set.

Pods and containers come from a ListIndex (cri/listindex.py: encoded once,
filtered on indexes); stats are read and encoded at each call.
"""

from __future__ import annotations

from collections.abc import Mapping

from podrt.api.runtime import v1 as cri
from podrt.container.manager import ContainerManager, ContainerView
from podrt.cri import container_convert as cconv
from podrt.cri import sandbox_convert as conv
from podrt.cri import stats_convert as sconv
from podrt.cri.listcache import entries
from podrt.cri.listindex import Listed, ListIndex
from podrt.sandbox.manager import SandboxManager, SandboxView


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """A CRI filter's label_selector: every pair present (an empty selector matches all)."""
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_listed(view: SandboxView) -> Listed:
    return Listed(view.state.id, view.state, conv.STATE[view.ready], view.state.config.labels)


def _container_listed(view: ContainerView) -> Listed:
    s = view.state
    return Listed(s.id, s, cconv.STATE[view.status], s.config.labels, s.sandbox_id)


class PodList:
    """ListPodSandbox and StreamPodSandboxes."""

    def __init__(self, sandboxes: SandboxManager) -> None:
        self._sandboxes = sandboxes
        self._index: ListIndex[SandboxView] = ListIndex(conv.pod_sandbox, _pod_listed)

    def entries(self, f: cri.PodSandboxFilter) -> list[bytes]:
        self._index.sync(self._sandboxes.statuses.list_version(), self._sandboxes.list)
        return self._index.select(ids=self._sandboxes.matching_ids(f.id) if f.id else None,
                                  state=f.state.state if f.is_set("state") else None, labels=f.label_selector)


class ContainerList:
    """ListContainers and StreamContainers. An exit conmon wrote and the
    watcher has not recorded yet is listed, as ContainerStatus shows it."""

    def __init__(self, containers: ContainerManager) -> None:
        self._containers = containers
        self._index: ListIndex[ContainerView] = ListIndex(cconv.container, _container_listed)

    def entries(self, f: cri.ContainerFilter) -> list[bytes]:
        self._index.sync(self._containers.statuses.list_version(), self._containers.list)
        for view in self._containers.statuses.unrecorded_exits():
            self._index.update(view)
        return self._index.select(ids=self._containers.matching_ids(f.id) if f.id else None,
                                  state=f.state.state if f.is_set("state") else None, labels=f.label_selector,
                                  group=f.pod_sandbox_id or None)


async def container_stats(containers: ContainerManager, views: list[ContainerView]) -> list[cri.ContainerStats]:
    root = containers.deps.root  # the writable layers' filesystem, as ImageFsInfo names it
    return [sconv.container_stats(v, sample, root) for v, sample in await containers.stats(views)]


async def pod_stats(containers: ContainerManager, views: list[SandboxView]) -> list[cri.PodSandboxStats]:
    root = containers.deps.root
    return [sconv.pod_stats(pod, sample, [sconv.container_stats(v, s, root) for v, s in mine])
            for pod, sample, mine in await containers.pod_stats(views)]


async def container_stats_entries(containers: ContainerManager, f: cri.ContainerStatsFilter) -> list[bytes]:
    """ListContainerStats and StreamContainerStats."""
    ids = containers.matching_ids(f.id) if f.id else None
    selector, pod = dict(f.label_selector), f.pod_sandbox_id

    def match(view: ContainerView) -> bool:
        return view.state.sandbox_id.startswith(pod) and labels_match(view.state.config.labels, selector)

    return entries(await container_stats(containers, containers.list(match, ids)))


async def pod_stats_entries(sandboxes: SandboxManager, containers: ContainerManager,
                            f: cri.PodSandboxStatsFilter) -> list[bytes]:
    """ListPodSandboxStats and StreamPodSandboxStats."""
    ids = sandboxes.matching_ids(f.id) if f.id else None
    selector = dict(f.label_selector)
    return entries(await pod_stats(containers, sandboxes.list(lambda v: labels_match(v.state.config.labels, selector), ids)))
