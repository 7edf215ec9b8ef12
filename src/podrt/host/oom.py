"""Negative OOM score adjustments need CAP_SYS_RESOURCE (containerd's
restrict_oom_score_adj). Without it runc fails with only "can't get final
child's PID from pipe: EOF", so podrt finds out once at start and clamps."""

from __future__ import annotations

import logging
from pathlib import Path

from podrt.host import proc

log = logging.getLogger(__name__)


def current_oom_score_adj() -> int:
    return int(Path("/proc/self/oom_score_adj").read_text())


def can_set(value: int) -> bool:
    """Try it in a throwaway child, so the daemon's own score never changes."""
    try:
        code, _, _ = proc.run_sync(["sh", "-c", f"echo {value} > /proc/self/oom_score_adj"], timeout=10)
    except OSError:  # TimeoutError included
        return False
    return code == 0


def effective_oom_score_adj(wanted: int) -> int:
    current = current_oom_score_adj()
    if wanted >= current or can_set(wanted):
        return wanted
    log.warning("cannot set oom_score_adj %d here (no CAP_SYS_RESOURCE); infra containers get %d", wanted, current)
    return current
