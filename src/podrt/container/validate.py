"""CreateContainer's checks before anything is made: each refusal is one
clear InvalidArgument or FailedPrecondition naming the field."""

from __future__ import annotations

import os
import posixpath

from podrt.container.model import ContainerConfig
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.sandbox.store import SandboxState
from podrt.sandbox.validate import NAME_PART


def check_request(cfg: ContainerConfig, pod: SandboxState) -> None:
    if not cfg.name:
        raise InvalidArgument("ContainerConfig.metadata.name must not be empty")
    if not NAME_PART.fullmatch(cfg.name):
        raise InvalidArgument(f"invalid metadata.name {cfg.name!r}: must be a Kubernetes name")
    if not cfg.image:
        raise InvalidArgument("ContainerConfig.image.image must not be empty")
    if cfg.privileged and not pod.config.privileged:
        raise InvalidArgument("a privileged container needs a privileged pod sandbox")
    if cfg.log_path and (posixpath.isabs(cfg.log_path) or ".." in cfg.log_path.split("/")):
        raise InvalidArgument(f"log_path {cfg.log_path!r} must be relative to the pod's log directory, without '..'")
    for n, m in enumerate(cfg.mounts):
        where = f"mounts[{n}]"
        if not posixpath.isabs(m.container_path):
            raise InvalidArgument(f"{where}.container_path {m.container_path!r} must be absolute")
        if not os.path.isabs(m.host_path):
            raise InvalidArgument(f"{where}.host_path {m.host_path!r} must be absolute")
        if not os.path.lexists(m.host_path):
            raise InvalidArgument(f"{where}.host_path {m.host_path} does not exist")
    if cfg.working_dir and not posixpath.isabs(cfg.working_dir):
        raise InvalidArgument(f"working_dir {cfg.working_dir!r} must be absolute")
    for key, _ in cfg.envs:
        if not key or "=" in key or "\0" in key:
            raise InvalidArgument(f"invalid environment variable name {key!r}")


def check_pod_ready(pod: SandboxState, ready: bool) -> None:
    if pod.stopped or not ready:
        raise FailedPrecondition(f"pod sandbox {pod.id} is not ready; containers are created in ready pods only")
