"""What every RPC group of RuntimeService reads: the managers its RPCs call,
what the List* and Stream* RPCs share (cri/lists.py), and the statuses'
encodings (cri/statuscache.py).

RuntimeService (cri/runtime.py) is one grpclib servicer composed of one mixin
per RPC group (pods, containers, events, streams, stats, list streams, runtime
info), each in a module of its own; it sets these attributes once, in its __init__.
"""

from __future__ import annotations

from podrt.container.manager import ContainerManager, ContainerView
from podrt.cri.lists import ContainerList, PodList
from podrt.cri.statuscache import StatusCache
from podrt.node.status import RuntimeStatusManager
from podrt.sandbox.manager import SandboxManager, SandboxView
from podrt.streaming.server import StreamServer


class RpcGroup:
    _status: RuntimeStatusManager
    _sandboxes: SandboxManager
    _containers: ContainerManager
    _streams: StreamServer
    _pod_list: PodList
    _container_list: ContainerList
    _pod_status_cache: StatusCache[SandboxView]  # PodSandboxStatus' encoded statuses
    _container_status_cache: StatusCache[ContainerView]
    _chunk_size: int  # the most bytes of a Stream* response message (but for one larger item)
