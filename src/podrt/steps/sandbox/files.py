"""/etc/hostname and /etc/resolv.conf for the pod, written into its run dir."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.host.fsutil import unlink_all
from podrt.model.sandbox import DnsConfig
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext


def render_resolv_conf(dns: DnsConfig) -> str:
    lines = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def pod_hostname(ctx: SandboxContext) -> str:
    """CRI-O's rule: the requested name, else the host's (host network) or the ID's first 12."""
    if ctx.config.hostname:
        return ctx.config.hostname
    return socket.gethostname() if ctx.config.host_network else ctx.id[:12]


class HostFiles(SandboxStep):
    kind = "files"
    journaled = False  # files in the run dir: the storage undo removes them
    blocking = True  # file writes: in a worker thread

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        run = self.deps.run_dir(ctx.id)
        return {"hostname": str(run / "hostname"), "resolv_conf": str(run / "resolv.conf")}

    def do_blocking(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        ctx.hostname = pod_hostname(ctx)
        Path(data["hostname"]).write_text(ctx.hostname + "\n")
        ctx.hostname_file = data["hostname"]
        if ctx.config.dns is not None:
            Path(data["resolv_conf"]).write_text(render_resolv_conf(ctx.config.dns))
            ctx.resolv_conf = data["resolv_conf"]
        if ctx.config.own_userns:  # the pod's root's, as /etc files are in an image (bound read-only)
            for path in filter(None, (ctx.hostname_file, ctx.resolv_conf)):
                os.chown(path, *ctx.config.userns.root)

    async def undo(self, data: dict[str, Any]) -> None:
        """In a worker thread: an unlink waits for its dir's lock (the pod dir's removal may hold it)."""
        await finish_in_thread(unlink_all, [data[key] for key in ("hostname", "resolv_conf")])
