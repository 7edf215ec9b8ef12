"""SELinux process labels: applied only where SELinux is on (CRI-O's rule); a
no-op elsewhere, as on these machines. Knows labels, not pods or containers."""

from __future__ import annotations

import functools
from pathlib import Path

import attrs

SELINUXFS = Path("/sys/fs/selinux")


@functools.cache
def enabled() -> bool:
    return (SELINUXFS / "enforce").exists()


@attrs.frozen
class SelinuxOptions:
    user: str = ""
    role: str = ""
    type: str = ""
    level: str = ""


def process_label(opts: SelinuxOptions | None, *, shares_host: bool, selinux_on: bool | None = None) -> str:
    """user:role:type:level from the request's options; "" when SELinux is off,
    when nothing was asked, or for a process sharing the host's PID or IPC
    namespace (it shares the host's processes or memory, so CRI-O leaves it
    unlabelled)."""
    on = enabled() if selinux_on is None else selinux_on
    if not on or opts is None or shares_host:
        return ""
    parts = [opts.user or "system_u", opts.role or "system_r", opts.type or "container_t"]
    if opts.level:
        parts.append(opts.level)
    return ":".join(parts)
