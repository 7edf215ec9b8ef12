"""ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats."""

from __future__ import annotations

from podrt.api.runtime import v1 as cri
from podrt.cri import lists
from podrt.cri.listcache import whole
from podrt.cri.rpcgroup import RpcGroup


class StatsRpcs(RpcGroup):
    async def container_stats(self, container_stats_request: cri.ContainerStatsRequest) -> cri.ContainerStatsResponse:
        view = self._containers.view(self._containers.resolve(container_stats_request.container_id))
        return cri.ContainerStatsResponse(stats=(await lists.container_stats(self._containers, [view]))[0])

    async def list_container_stats(self, list_container_stats_request: cri.ListContainerStatsRequest
                                   ) -> cri.ListContainerStatsResponse:
        found = await lists.container_stats_entries(self._containers, list_container_stats_request.filter)
        return whole(cri.ListContainerStatsResponse, found)

    async def pod_sandbox_stats(self, pod_sandbox_stats_request: cri.PodSandboxStatsRequest) -> cri.PodSandboxStatsResponse:
        view = self._sandboxes.view(self._sandboxes.resolve(pod_sandbox_stats_request.pod_sandbox_id))
        return cri.PodSandboxStatsResponse(stats=(await lists.pod_stats(self._containers, [view]))[0])

    async def list_pod_sandbox_stats(self, list_pod_sandbox_stats_request: cri.ListPodSandboxStatsRequest
                                     ) -> cri.ListPodSandboxStatsResponse:
        found = await lists.pod_stats_entries(self._sandboxes, self._containers, list_pod_sandbox_stats_request.filter)
        return whole(cri.ListPodSandboxStatsResponse, found)
