"""The pod's IPC and UTS namespaces, made and pinned by podrt (host/nspin.py)
for a pod without an infra process (as CRI-O's pinns does with
drop_infra_ctr): its hostname set in the UTS one, its sysctls written in the
namespaces they belong to (net.* in the pinned netns), where runc set them up
in the infra before. Its containers join them by path. A host namespace
(host IPC; the host's UTS with the host network) is no pin: none is made.
Released at StopPodSandbox, as the netns is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.host.nspin import SysctlRefused, create_pod_namespaces, remove_pin
from podrt.model.sandbox import SandboxConfig
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext
from podrt.steps.sandbox.runtime import sysctl_refused

PINNED_KINDS = ("ipc", "uts")


def pinned_kinds(cfg: SandboxConfig) -> tuple[str, ...]:
    """The namespaces a pod without an infra gets pinned: those it does not share with the host."""
    host = {"ipc": cfg.host_ipc, "uts": cfg.host_network}
    return tuple(kind for kind in PINNED_KINDS if not host[kind])


class PodNamespaces(SandboxStep):
    kind = "podns"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"pins": {kind: str(self.deps.ns_pin(kind, ctx.id)) for kind in pinned_kinds(ctx.config)}}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        pins = {kind: Path(path) for kind, path in data["pins"].items()}
        try:
            await create_pod_namespaces(
                pins, owner=Path(ctx.userns_path) if ctx.userns_path else None,
                netns=Path(ctx.netns_path) if ctx.netns_path else None, hostname=ctx.hostname, sysctls=ctx.sysctls)
        except SysctlRefused as exc:
            raise sysctl_refused(str(exc)) from None
        ctx.ipc_path, ctx.uts_path = data["pins"].get("ipc"), data["pins"].get("uts")

    async def undo(self, data: dict[str, Any]) -> None:
        for path in data["pins"].values():
            await remove_pin(Path(path))
