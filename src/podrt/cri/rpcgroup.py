"""What every RPC group of RuntimeService reads: the managers its RPCs call.

RuntimeService (cri/runtime.py) is one grpclib servicer composed of one mixin
per RPC group (pods, containers, events, streams, stats, runtime info), each in
a module of its own; it sets these attributes once, in its __init__.
"""

from __future__ import annotations

from collections.abc import Mapping

from podrt.container.manager import ContainerManager
from podrt.node.status import RuntimeStatusManager
from podrt.sandbox.manager import SandboxManager
from podrt.streaming.server import StreamServer


class RpcGroup:
    _status: RuntimeStatusManager
    _sandboxes: SandboxManager
    _containers: ContainerManager
    _streams: StreamServer


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """A CRI filter's label_selector: every pair present (an empty selector matches all)."""
    return all(labels.get(k) == v for k, v in selector.items())
