"""CNI ADD of the pod into the default network, with its port mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.errors import Unavailable
from podrt.network.cni import CniError, CniPodInfo
from podrt.network.cniconf import network_from_raw
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext

IFNAME = "eth0"


def port_mapping_args(ctx: SandboxContext) -> list[dict[str, Any]]:
    """CNI's portMappings capability format."""
    return [
        {"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol, "hostIP": p.host_ip}
        for p in ctx.config.port_mappings
        if p.host_port
    ]


class CniAdd(SandboxStep):
    kind = "cni"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        assert ctx.network is not None, "the manager looks the network up before the transaction"
        cfg = ctx.config
        return {  # the exact network used, so DEL works even if the config dir changes
            "network": ctx.network.raw,
            "path": str(ctx.network.path),
            "pod": [cfg.namespace, cfg.name, cfg.uid, ctx.id],
            "netns": ctx.netns_path,
            "ports": port_mapping_args(ctx),
        }

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        network = network_from_raw(data["network"], Path(data["path"]))
        try:
            result = await self.deps.cni.add(network, CniPodInfo(*data["pod"]), data["netns"], IFNAME, data["ports"])
        except CniError as exc:  # the network plugin's failure, not podrt's: the kubelet retries the pod
            raise Unavailable(f"the pod network could not be set up: {exc}") from None
        ctx.ips = list(result.ip_addresses)
        data["ips"] = ctx.ips

    async def undo(self, data: dict[str, Any]) -> None:
        network = network_from_raw(data["network"], Path(data["path"]))
        await self.deps.cni.delete(network, CniPodInfo(*data["pod"]), data["netns"], IFNAME, data["ports"])
