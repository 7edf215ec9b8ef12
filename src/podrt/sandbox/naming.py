"""Names and IDs, as CRI-O makes them (kubelet and tools expect these forms)."""

from __future__ import annotations

import re
import secrets

from podrt.model.sandbox import SandboxConfig

INFRA_CONTAINER_NAME = "POD"


def new_id() -> str:
    """64 hex characters, like the IDs of CRI-O and containerd."""
    return secrets.token_hex(32)


def is_id(name: str) -> bool:
    """Whether `name` has the form of podrt's IDs (a pin or dir podrt may have made)."""
    return _ID.fullmatch(name) is not None


_ID = re.compile(r"[0-9a-f]{64}")


def pod_name(cfg: SandboxConfig) -> str:
    return f"k8s_{cfg.name}_{cfg.namespace}_{cfg.uid}_{cfg.attempt}"


def infra_name(cfg: SandboxConfig) -> str:
    return f"k8s_{INFRA_CONTAINER_NAME}_{cfg.name}_{cfg.namespace}_{cfg.uid}_{cfg.attempt}"
