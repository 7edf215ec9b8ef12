"""ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats."""

from __future__ import annotations

from podrt.api.runtime import v1 as cri
from podrt.container.manager import ContainerView
from podrt.cri import stats_convert as sconv
from podrt.cri.rpcgroup import RpcGroup, labels_match
from podrt.sandbox.manager import SandboxView


class StatsRpcs(RpcGroup):
    async def container_stats(self, container_stats_request: cri.ContainerStatsRequest) -> cri.ContainerStatsResponse:
        view = self._containers.view(self._containers.resolve(container_stats_request.container_id))
        return cri.ContainerStatsResponse(stats=(await self._container_stats([view]))[0])

    async def list_container_stats(self, list_container_stats_request: cri.ListContainerStatsRequest
                                   ) -> cri.ListContainerStatsResponse:
        f = list_container_stats_request.filter
        ids = self._containers.matching_ids(f.id) if f.id else None
        selector, pod = dict(f.label_selector), f.pod_sandbox_id

        def match(view: ContainerView) -> bool:
            labels = view.state.config.labels
            return view.state.sandbox_id.startswith(pod) and labels_match(labels, selector)

        return cri.ListContainerStatsResponse(stats=await self._container_stats(self._containers.list(match, ids)))

    async def _container_stats(self, views: list[ContainerView]) -> list[cri.ContainerStats]:
        root = self._containers.deps.root  # the writable layers' filesystem, as ImageFsInfo names it
        return [sconv.container_stats(v, sample, root) for v, sample in await self._containers.stats(views)]

    async def pod_sandbox_stats(self, pod_sandbox_stats_request: cri.PodSandboxStatsRequest) -> cri.PodSandboxStatsResponse:
        view = self._sandboxes.view(self._sandboxes.resolve(pod_sandbox_stats_request.pod_sandbox_id))
        return cri.PodSandboxStatsResponse(stats=(await self._pod_stats([view]))[0])

    async def list_pod_sandbox_stats(self, list_pod_sandbox_stats_request: cri.ListPodSandboxStatsRequest
                                     ) -> cri.ListPodSandboxStatsResponse:
        f = list_pod_sandbox_stats_request.filter
        ids = self._sandboxes.matching_ids(f.id) if f.id else None
        selector = dict(f.label_selector)

        def match(view: SandboxView) -> bool:
            return labels_match(view.state.config.labels, selector)

        return cri.ListPodSandboxStatsResponse(stats=await self._pod_stats(self._sandboxes.list(match, ids)))

    async def _pod_stats(self, views: list[SandboxView]) -> list[cri.PodSandboxStats]:
        root = self._containers.deps.root
        return [sconv.pod_stats(pod, sample, [sconv.container_stats(v, s, root) for v, s in mine])
                for pod, sample, mine in await self._containers.pod_stats(views)]
