"""CreateContainer's checks before anything is made: each refusal is one
clear InvalidArgument or FailedPrecondition naming the field."""

from __future__ import annotations

import os
import posixpath
import re

from podrt.container.model import ContainerConfig, Propagation, Resources
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.oci.seccomp import ProfileType
from podrt.sandbox.model import NsMode
from podrt.sandbox.store import SandboxState
from podrt.sandbox.validate import NAME_PART

_SC = "linux.security_context"
_PAGE_SIZE = re.compile(r"[1-9][0-9]*(KB|MB|GB|TB|PB)")  # the kubelet's form: "2MB", "1GB"
_UNIFIED_KEY = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_.]+")  # a cgroup v2 interface file, e.g. "memory.high"


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
        if m.image:
            if m.propagation != Propagation.PRIVATE:
                raise InvalidArgument(f"{where}.propagation: an image volume's is private")
            sub = m.image_sub_path
            if sub and (posixpath.isabs(sub) or ".." in sub.split("/") or "\0" in sub):
                raise InvalidArgument(f"{where}.image_sub_path {sub!r} must be relative, without '..'")
            continue
        if not os.path.isabs(m.host_path):
            raise InvalidArgument(f"{where}.host_path {m.host_path!r} must be absolute")
        if not os.path.lexists(m.host_path):
            raise InvalidArgument(f"{where}.host_path {m.host_path} does not exist")
    check_devices(cfg)
    if cfg.working_dir and not posixpath.isabs(cfg.working_dir):
        raise InvalidArgument(f"working_dir {cfg.working_dir!r} must be absolute")
    for key, _ in cfg.envs:
        if not key or "=" in key or "\0" in key:
            raise InvalidArgument(f"invalid environment variable name {key!r}")
    check_security(cfg)


def check_devices(cfg: ContainerConfig) -> None:
    """Form and existence only; container/devices.py stats the nodes when the spec is built."""
    for n, d in enumerate(cfg.devices):
        where = f"devices[{n}]"
        _check_path(f"{where}.container_path", d.container_path)
        _check_path(f"{where}.host_path", d.host_path)
        if not os.path.exists(d.host_path):
            raise InvalidArgument(f"{where}.host_path {d.host_path}: no such device")
        if not set(d.permissions) <= set("rwm") or len(set(d.permissions)) != len(d.permissions):
            raise InvalidArgument(f"{where}.permissions {d.permissions!r}: must be some of 'r', 'w' and 'm', each once")


def check_security(cfg: ContainerConfig) -> None:
    """Masked and read-only paths, AppArmor and the PID namespace mode."""
    for field in ("masked_paths", "readonly_paths"):
        for n, path in enumerate(getattr(cfg, field)):
            _check_path(f"{_SC}.{field}[{n}]", path)
    if cfg.apparmor == ProfileType.LOCALHOST and not cfg.apparmor_localhost_ref.removeprefix("localhost/"):
        raise InvalidArgument(f"{_SC}.apparmor.localhost_ref must name a profile for a Localhost profile_type")
    if cfg.pid_mode == NsMode.TARGET and not cfg.pid_target_id:
        raise InvalidArgument(f"{_SC}.namespace_options.target_id must name a container when pid is TARGET")


def check_resources(field: str, r: Resources) -> None:
    """What runc would refuse with an unhelpful message, named here instead."""
    if r.memory_swap_limit and not r.memory_limit:
        raise InvalidArgument(f"{field}.memory_swap_limit_in_bytes needs memory_limit_in_bytes (swap counts on top of it)")
    if r.memory_swap_limit > 0 and r.memory_swap_limit < r.memory_limit:
        raise InvalidArgument(f"{field}.memory_swap_limit_in_bytes {r.memory_swap_limit} is memory plus swap: "
                              f"it must be at least memory_limit_in_bytes ({r.memory_limit}), or -1 for unlimited")
    sizes = [h.page_size for h in r.hugepage_limits]
    for n, size in enumerate(sizes):
        if not _PAGE_SIZE.fullmatch(size):
            raise InvalidArgument(f"{field}.hugepage_limits[{n}].page_size {size!r}: must be a size like '2MB' or '1GB'")
    if len(set(sizes)) != len(sizes):
        raise InvalidArgument(f"{field}.hugepage_limits: a page size is given twice")
    for key, value in r.unified.items():
        if not _UNIFIED_KEY.fullmatch(key):
            raise InvalidArgument(f"{field}.unified: {key!r} is not a cgroup v2 file name like 'memory.high'")
        if "\n" in value or "\0" in value:
            raise InvalidArgument(f"{field}.unified[{key!r}]: the value must be one line")


def _check_path(field: str, path: str) -> None:
    if not posixpath.isabs(path) or "\0" in path or ".." in path.split("/"):
        raise InvalidArgument(f"{field} {path!r} must be an absolute path without '..'")


def check_pod_ready(pod: SandboxState, ready: bool) -> None:
    if pod.stopped or not ready:
        raise FailedPrecondition(f"pod sandbox {pod.id} is not ready; containers are created in ready pods only")
