"""What every RPC group of RuntimeService reads: the managers its RPCs call,
and what the List* and Stream* RPCs share (cri/lists.py).

RuntimeService (cri/runtime.py) is one grpclib servicer composed of one mixin
per RPC group (pods, containers, events, streams, stats, list streams, runtime
info), each in a module of its own; it sets these attributes once, in its __init__.
"""

from __future__ import annotations

from podrt.container.manager import ContainerManager
from podrt.cri.lists import ContainerList, PodList
from podrt.node.status import RuntimeStatusManager
from podrt.sandbox.manager import SandboxManager
from podrt.streaming.server import StreamServer


class RpcGroup:
    _status: RuntimeStatusManager
    _sandboxes: SandboxManager
    _containers: ContainerManager
    _streams: StreamServer
    _pod_list: PodList
    _container_list: ContainerList
    _chunk_size: int  # the most bytes of a Stream* response message (but for one larger item)
