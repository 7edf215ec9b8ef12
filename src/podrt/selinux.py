"""SELinux process labels for pods: applied only where SELinux is on (CRI-O's
rule); a no-op elsewhere, as on these machines."""

from __future__ import annotations

import functools
from pathlib import Path

from podrt.sandbox.model import SandboxConfig

SELINUXFS = Path("/sys/fs/selinux")


@functools.cache
def enabled() -> bool:
    return (SELINUXFS / "enforce").exists()


def process_label(cfg: SandboxConfig, *, selinux_on: bool | None = None) -> str:
    """user:role:type:level from the request's options; "" when SELinux is off,
    when nothing was asked, or for host PID/IPC pods (they share the host's
    processes or memory, so CRI-O leaves them unlabelled)."""
    on = enabled() if selinux_on is None else selinux_on
    if not on or cfg.selinux is None or cfg.host_pid or cfg.host_ipc:
        return ""
    opts = cfg.selinux
    parts = [opts.user or "system_u", opts.role or "system_r", opts.type or "container_t"]
    if opts.level:
        parts.append(opts.level)
    return ":".join(parts)
