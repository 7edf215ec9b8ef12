"""Building CRI pod requests for tests, and looking inside a pod from the host."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from podrt.api.runtime import v1 as cri


def pod_config(name: str | None = None, pid: cri.NamespaceMode = cri.NamespaceMode.POD, **kw: Any) -> cri.PodSandboxConfig:
    """A PodSandboxConfig like the kubelet's; keyword args set fields of it.
    `pid` (without `linux`): POD, a shared PID namespace (an infra process as
    its init); CONTAINER, what the kubelet sends without shareProcessNamespace
    (no infra process: podrt pins the pod's namespaces)."""
    name = f"pod-{uuid.uuid4().hex[:8]}" if name is None else name
    linux = kw.pop("linux", None) or cri.LinuxPodSandboxConfig(
        security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption(pid=pid))
    )
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="test", attempt=0),
        linux=linux,
        **kw,
    )


def host_ns(network: bool = False, pid: bool = False, ipc: bool = False) -> cri.LinuxPodSandboxConfig:
    node, pod = cri.NamespaceMode.NODE, cri.NamespaceMode.POD
    return cri.LinuxPodSandboxConfig(
        security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=node if network else pod, pid=node if pid else pod, ipc=node if ipc else pod)
        )
    )


def in_pod(pid: int, *argv: str, ns: str = "-n") -> str:
    """Run a host binary inside the infra process's namespaces (nsenter)."""
    out = subprocess.run(["nsenter", "-t", str(pid), ns, *argv], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout
