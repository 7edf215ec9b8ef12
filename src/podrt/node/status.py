"""What the runtime says about itself: version, readiness, node network config.

The kubelet polls Status to decide whether the node is Ready; NetworkReady is
true only when a usable CNI network config exists (as in CRI-O and containerd).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from typing import Any

import attrs

from podrt import __version__
from podrt.config import Config, dump_config
from podrt.errors import InvalidArgument
from podrt.host.idmap import IdmapSupport
from podrt.network.cniconf import CniLookup, network_finder
from podrt.oci import features
from podrt.oci.features import HandlerFeatures

RUNTIME_NAME = "podrt"
RUNTIME_API_VERSION = "v1"
KUBELET_API_VERSION = "0.1.0"  # what CRI runtimes answer in VersionResponse.version


@attrs.frozen
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


@attrs.frozen
class VersionInfo:
    version: str
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


@attrs.define
class RuntimeStatusManager:
    """Holds the node-level runtime state the kubelet reads and sets."""

    config: Config
    find_network: Callable[[], CniLookup] = attrs.field(
        default=attrs.Factory(lambda self: network_finder(self.config), takes_self=True)
    )
    pod_cidrs: tuple[str, ...] = ()
    idmap: IdmapSupport | None = None  # whether the host gives pods' user namespaces their files (None: never)

    def version(self) -> VersionInfo:
        return VersionInfo(KUBELET_API_VERSION, RUNTIME_NAME, __version__, RUNTIME_API_VERSION)

    async def conditions(self) -> list[Condition]:
        lookup = await asyncio.to_thread(self.find_network)  # lists and reads the CNI config dir
        network = Condition("NetworkReady", lookup.network is not None, lookup.reason, lookup.message)
        return [Condition("RuntimeReady", True), network]

    async def runtime_handlers(self) -> list[tuple[str, HandlerFeatures]]:
        """Each configured handler with what it can do here, after "" for the
        default one, as containerd lists it (and critest looks "" up)."""
        rt = self.config.runtime
        found = {name: await asyncio.to_thread(features.detect, h.runtime_path) for name, h in rt.runtimes.items()}
        if self.idmap is None or await self.idmap.problem() is not None:  # the host's part of user namespaces
            found = {name: attrs.evolve(f, userns=False) for name, f in found.items()}
        return [("", found[rt.default_runtime]), *found.items()]

    async def verbose_info(self) -> dict[str, str]:
        """Debug info for `crictl info`: effective config and the CNI network in use."""
        lookup = await asyncio.to_thread(self.find_network)
        cni: dict[str, Any] = {"network_dir": str(self.config.network.network_dir)}
        if lookup.network is not None:
            cni.update(path=str(lookup.network.path), config=lookup.network.raw)
        else:
            cni["error"] = lookup.message
        return {
            "config": dump_config(self.config),
            "cniconfig": json.dumps(cni),
            "podCIDRs": json.dumps(list(self.pod_cidrs)),
        }

    def update_pod_cidr(self, pod_cidr: str) -> None:
        """Remember the node's pod CIDR(s) (comma-separated for dual stack)."""
        if not pod_cidr:
            return  # the kubelet sends an empty config on start; nothing to change
        cidrs = []
        for part in pod_cidr.split(","):
            try:
                cidrs.append(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError:
                raise InvalidArgument(f"invalid pod CIDR {part.strip()!r} in {pod_cidr!r}") from None
        self.pod_cidrs = tuple(cidrs)
