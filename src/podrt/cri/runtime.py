"""RuntimeService: CRI messages <-> podrt managers. No business logic here.

One grpclib servicer composed of one mixin per RPC group, each in its own
module: pods.py, containers.py, events.py (GetContainerEvents), streams.py
(Exec, Attach, PortForward), stats.py, liststreams.py (the Stream* lists),
metrics.py (the CRI metrics) and runtime_info.py. The generated base comes
last: every RPC none of them defines answers UNIMPLEMENTED. The hooks
(cri/hooks.py: metrics, error mapping) wrap each call by its path, whichever
mixin serves it.
"""

from __future__ import annotations

import grpclib.const

from podrt.api.runtime import v1 as cri
from podrt.container.manager import ContainerManager, ContainerView
from podrt.cri import status_wire
from podrt.cri.containers import ContainerRpcs
from podrt.cri.events import EventRpcs
from podrt.cri.lists import ContainerList, PodList
from podrt.cri.liststreams import ListStreamRpcs
from podrt.cri.metrics import MetricRpcs
from podrt.cri.pods import PodRpcs
from podrt.cri.runtime_info import RuntimeInfoRpcs
from podrt.cri.stats import StatsRpcs
from podrt.cri.statuscache import StatusCache
from podrt.cri.streams import StreamRpcs
from podrt.node.status import RuntimeStatusManager
from podrt.sandbox.manager import SandboxManager, SandboxView
from podrt.streaming.server import StreamServer


def _pod_key(view: SandboxView) -> tuple[str, object, object]:
    return view.state.id, view.state, view.ready


def _container_key(view: ContainerView) -> tuple[str, object, object]:
    return view.state.id, view.state, view.status


class RuntimeService(PodRpcs, ContainerRpcs, EventRpcs, StreamRpcs, StatsRpcs, ListStreamRpcs, MetricRpcs, RuntimeInfoRpcs,
                     cri.RuntimeServiceBase):
    # what a kubelet asks most, by the same bytes each time; their methods only
    # read them, so the server decodes each body once (server.CriCodec)
    shared_requests = (cri.VersionRequest, cri.ListPodSandboxRequest, cri.ListContainersRequest,
                       cri.PodSandboxStatusRequest, cri.ContainerStatusRequest)

    def __init__(self, status: RuntimeStatusManager, sandboxes: SandboxManager, containers: ContainerManager,
                 streams: StreamServer, chunk_size: int) -> None:
        """`chunk_size`: the most bytes of a Stream* response message."""
        self._status = status
        self._streams = streams
        self._sandboxes = sandboxes
        self._containers = containers
        self._pod_list = PodList(sandboxes)
        self._container_list = ContainerList(containers)
        self._pod_status_cache = StatusCache(cri.PodSandboxStatusResponse, status_wire.pod_sandbox_status, _pod_key,
                                             lambda i: self._sandboxes.known(i))
        self._container_status_cache = StatusCache(cri.ContainerStatusResponse, status_wire.container_status, _container_key,
                                                   lambda i: self._containers.known(i))
        self._chunk_size = chunk_size
        self._init_events()
        self._init_metrics()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """GetContainerEvents gets a handler with the stream in hand (the
        generated one hides it), to send headers once the subscription is in place."""
        mapping = super().__mapping__()
        mapping["/runtime.v1.RuntimeService/GetContainerEvents"] = grpclib.const.Handler(
            self._container_events, grpclib.const.Cardinality.UNARY_STREAM,
            cri.GetEventsRequest, cri.ContainerEventResponse)
        return mapping
