"""ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics: the
cAdvisor metrics the kubelet serves on /metrics/cadvisor when it takes its
stats from the CRI (PodAndContainerStatsFromCRI), for every ready pod and its
running containers, in the groups [podrt.stats] included_pod_metrics names.

One pass reads and encodes them all off the event loop (container/metrics.py,
cri/metrics_convert.py); its answer serves every call for collection_period
seconds, and calls arriving while it runs wait for that same pass. The
stream sends the same pods in messages of at most list_chunk_size bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from podrt.aio import Recent
from podrt.api.runtime import v1 as cri
from podrt.cri import metrics_convert as mconv
from podrt.cri.listcache import chunked, whole
from podrt.cri.rpcgroup import RpcGroup


class MetricRpcs(RpcGroup):
    _metric_groups: frozenset[str]
    _pod_metrics: Recent[list[bytes]]

    def _init_metrics(self) -> None:
        config = self._containers.deps.config
        self._metric_groups = config.stats.pod_metric_groups
        self._pod_metrics = Recent(self._collect_pod_metrics, config.stats.collection_period, "pod metrics")

    async def list_metric_descriptors(self, list_metric_descriptors_request: cri.ListMetricDescriptorsRequest
                                      ) -> cri.ListMetricDescriptorsResponse:
        return cri.ListMetricDescriptorsResponse(descriptors=mconv.descriptors(self._metric_groups))

    async def list_pod_sandbox_metrics(self, list_pod_sandbox_metrics_request: cri.ListPodSandboxMetricsRequest
                                       ) -> cri.ListPodSandboxMetricsResponse:
        return whole(cri.ListPodSandboxMetricsResponse, await self._pod_metrics.get())

    async def stream_pod_sandbox_metrics(self, stream_pod_sandbox_metrics_request: cri.StreamPodSandboxMetricsRequest
                                         ) -> AsyncIterator[cri.StreamPodSandboxMetricsResponse]:
        for message in chunked(cri.StreamPodSandboxMetricsResponse, await self._pod_metrics.get(), self._chunk_size):
            yield message

    async def _collect_pod_metrics(self) -> list[bytes]:
        groups = self._metric_groups
        pods = self._sandboxes.list(lambda v: v.ready)
        return await self._containers.metrics.read(pods, groups, lambda r: mconv.pod_item(r, groups))
