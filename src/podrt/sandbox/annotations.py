"""OCI annotations of the infra spec: every CRI field needed to restore the pod.

Keys used by other tools (io.kubernetes.cri.*) are kept as containerd writes
them; podrt's own keys are io.podrt.*.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import attrs

from podrt.sandbox.naming import INFRA_CONTAINER_NAME
from podrt.steps.sandbox.context import IP_ANNOTATION, SandboxContext

CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
PREFIX = "io.podrt."


def infra_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The pod's labels plus the one that marks its infra container."""
    return {**labels, CONTAINER_NAME_LABEL: INFRA_CONTAINER_NAME}


def sandbox_annotations(ctx: SandboxContext, stop_signal: str) -> dict[str, str]:
    cfg = ctx.config
    ann = dict(cfg.annotations)
    ann.update(
        {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": ctx.id,
            "io.kubernetes.cri.sandbox-name": cfg.name,
            "io.kubernetes.cri.sandbox-namespace": cfg.namespace,
            "io.kubernetes.cri.sandbox-uid": cfg.uid,
            "io.kubernetes.cri.sandbox-log-directory": ctx.log_directory,
            PREFIX + "metadata": json.dumps({"name": cfg.name, "uid": cfg.uid, "namespace": cfg.namespace, "attempt": cfg.attempt}),
            PREFIX + "labels": json.dumps(infra_labels(cfg.labels)),
            PREFIX + "annotations": json.dumps(dict(cfg.annotations)),
            PREFIX + "created": str(ctx.created_at),
            PREFIX + "log-path": ctx.infra_log_path,
            PREFIX + "shm-path": ctx.shm_path or "",
            PREFIX + "hostname": ctx.hostname,
            PREFIX + "hostname-path": ctx.hostname_file,
            PREFIX + "resolv-path": ctx.resolv_conf or "",
            PREFIX + "netns-path": ctx.netns_path or "",
            IP_ANNOTATION: ",".join(ctx.ips),
            PREFIX + "namespace-options": json.dumps({k: v.value for k, v in attrs.asdict(cfg.namespaces, recurse=False).items()}),
            PREFIX + "cgroup-parent": ctx.cgroup_parent,
            PREFIX + "privileged": json.dumps(cfg.privileged),
            PREFIX + "port-mappings": json.dumps([attrs.asdict(p) for p in cfg.port_mappings]),
            PREFIX + "stop-signal": stop_signal,
            PREFIX + "runtime-handler": ctx.runtime_handler,
            PREFIX + "pod-name": ctx.pod_name,
            PREFIX + "infra-name": ctx.infra_name,
        }
    )
    return ann
