"""StreamPodSandboxes, StreamContainers, StreamContainerStats, StreamPodSandboxStats:
the server-streaming lists of KEP-5825 (the kubelet's `CRIListStreaming` gate).

Each answers what its List* RPC answers (the same function of cri/lists.py
selects the items), as messages of at most `_chunk_size` bytes: the kubelet
appends the lists of every message until the stream ends, so a node with
more than one gRPC message can hold is still listed. No items: no message.
The items are read once, before the first message goes out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from podrt.api.runtime import v1 as cri
from podrt.cri import lists
from podrt.cri.listcache import chunked
from podrt.cri.rpcgroup import RpcGroup


class ListStreamRpcs(RpcGroup):
    async def stream_pod_sandboxes(self, stream_pod_sandboxes_request: cri.StreamPodSandboxesRequest
                                   ) -> AsyncIterator[cri.StreamPodSandboxesResponse]:
        found = self._pod_list.entries(stream_pod_sandboxes_request.filter)
        for message in chunked(cri.StreamPodSandboxesResponse, found, self._chunk_size):
            yield message

    async def stream_containers(self, stream_containers_request: cri.StreamContainersRequest
                                ) -> AsyncIterator[cri.StreamContainersResponse]:
        found = self._container_list.entries(stream_containers_request.filter)
        for message in chunked(cri.StreamContainersResponse, found, self._chunk_size):
            yield message

    async def stream_container_stats(self, stream_container_stats_request: cri.StreamContainerStatsRequest
                                     ) -> AsyncIterator[cri.StreamContainerStatsResponse]:
        found = await lists.container_stats_entries(self._containers, stream_container_stats_request.filter)
        for message in chunked(cri.StreamContainerStatsResponse, found, self._chunk_size):
            yield message

    async def stream_pod_sandbox_stats(self, stream_pod_sandbox_stats_request: cri.StreamPodSandboxStatsRequest
                                       ) -> AsyncIterator[cri.StreamPodSandboxStatsResponse]:
        found = await lists.pod_stats_entries(self._sandboxes, self._containers, stream_pod_sandbox_stats_request.filter)
        for message in chunked(cri.StreamPodSandboxStatsResponse, found, self._chunk_size):
            yield message
