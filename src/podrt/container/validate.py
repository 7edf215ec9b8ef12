"""CreateContainer's checks before anything is made: each refusal is one
clear InvalidArgument or FailedPrecondition naming the field."""

from __future__ import annotations

import os
import posixpath
import re

from podrt.config import Config
from podrt.container import hostfit
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.host import cgroups
from podrt.model.container import ContainerConfig, Mount, Propagation, Resources
from podrt.model.sandbox import NsMode
from podrt.oci import features
from podrt.oci.spec import ALL_CAPABILITIES
from podrt.sandbox.validate import NAME_PART, check_dirs, check_path_lengths, check_same_userns
from podrt.security.seccomp import ProfileType
from podrt.state.records import SandboxState

_SC = "linux.security_context"
_PAGE_SIZE = re.compile(r"[1-9][0-9]*(KB|MB|GB|TB|PB)")  # the kubelet's form: "2MB", "1GB"
_UNIFIED_KEY = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_.]+")  # a cgroup v2 interface file, e.g. "memory.high"
MIN_MEMORY = 12 << 20  # CRI-O's floor: below it runc's init (and the process) cannot start


def check_request(cfg: ContainerConfig, pod: SandboxState) -> None:
    if not cfg.name:
        raise InvalidArgument("ContainerConfig.metadata.name must not be empty")
    if not NAME_PART.fullmatch(cfg.name):
        raise InvalidArgument(f"invalid metadata.name {cfg.name!r}: must be a Kubernetes name")
    if not cfg.image:
        raise InvalidArgument("ContainerConfig.image.image must not be empty")
    if cfg.privileged and not pod.config.privileged:
        raise InvalidArgument("a privileged container needs a privileged pod sandbox")
    check_process(cfg)
    check_log_path(log_name(cfg), pod.log_directory)
    for n, m in enumerate(cfg.mounts):
        where = f"mounts[{n}]"
        _check_path(f"{where}.container_path", m.container_path, dots=True)
        if m.recursive_read_only:
            check_recursive_read_only(where, m)
        if m.image:
            if m.propagation != Propagation.PRIVATE:
                raise InvalidArgument(f"{where}.propagation: an image volume's is private")
            sub = m.image_sub_path
            if sub and (posixpath.isabs(sub) or ".." in sub.split("/") or "\0" in sub):
                raise InvalidArgument(f"{where}.image_sub_path {sub!r} must be relative, without '..'")
            continue
        _check_path(f"{where}.host_path", m.host_path, dots=True)
        if not os.path.lexists(m.host_path):
            raise InvalidArgument(f"{where}.host_path {m.host_path} does not exist")
    check_devices(cfg)
    check_security(cfg)
    check_same_userns(f"{_SC}.namespace_options.userns_options", cfg.userns, pod.config.userns)
    check_host_fit("linux.resources", cfg.resources)


def check_recursive_read_only(where: str, m: Mount) -> None:
    """The CRI's rule, and containerd's checks: a recursively read-only mount
    is read-only, and private (a propagated mount would arrive writable)."""
    if not m.readonly:
        raise InvalidArgument(f"{where}.recursive_read_only needs readonly: true (a read-write mount cannot be recursively read-only)")
    if m.propagation != Propagation.PRIVATE:
        raise InvalidArgument(f"{where}.recursive_read_only needs propagation PROPAGATION_PRIVATE, "
                              f"not PROPAGATION_{m.propagation.name} (mounts it receives later would be writable)")


def check_handler_has_rro(cfg: ContainerConfig, handler: str, config: Config) -> None:
    """InvalidArgument when a mount asks for `rro` and the pod's handler cannot
    (what Status reports for it): the host cannot honour the field. Runs the
    handler's binary the first time: call it in a thread."""
    wanted = [n for n, m in enumerate(cfg.mounts) if m.recursive_read_only]
    if wanted and not features.detect(config.runtime_handler(handler).runtime_path).rro:
        raise InvalidArgument(f"mounts[{wanted[0]}].recursive_read_only: runtime handler {handler!r} does not support "
                              f"recursive read-only mounts here (its `features` lack rro, or the kernel predates "
                              f"mount_setattr, 5.12)")


def check_process(cfg: ContainerConfig) -> None:
    """What execve and the OCI process take: strings without NUL, an absolute
    working dir, environment names without '='."""
    if cfg.command and not cfg.command[0]:
        raise InvalidArgument("command[0] must name an executable, not be empty")
    for field, values in (("command", cfg.command), ("args", cfg.args)):
        for n, value in enumerate(values):
            if "\0" in value:
                raise InvalidArgument(f"{field}[{n}] must not contain a NUL byte")
    if cfg.working_dir:
        _check_path("working_dir", cfg.working_dir, dots=True)
    for n, (key, value) in enumerate(cfg.envs):
        if not key or "=" in key or "\0" in key:
            raise InvalidArgument(f"envs[{n}].key {key!r:.100}: not a valid environment variable name")
        if "\0" in value:
            raise InvalidArgument(f"envs[{n}].value of {key!r:.100} must not contain a NUL byte")


def log_name(cfg: ContainerConfig) -> str:
    """The container's log file below the pod's log dir (the kubelet always names one)."""
    return cfg.log_path or f"{cfg.name}_{cfg.attempt}.log"


def check_log_path(log_path: str, log_directory: str) -> None:
    """A file the kubelet can find below the pod's log dir: relative, without
    '..', not a directory, within the kernel's name and path limits, its
    existing parents real directories (conmon follows a symlink anywhere)."""
    what = f"log_path {log_path!r:.200}"
    if "\0" in log_path:
        raise InvalidArgument(f"{what} must not contain a NUL byte")
    if posixpath.isabs(log_path) or ".." in log_path.split("/"):
        raise InvalidArgument(f"{what} must be relative to the pod's log directory, without '..'")
    if log_path.endswith("/") or posixpath.normpath(log_path) == ".":
        raise InvalidArgument(f"{what} names a directory, not a file")
    check_path_lengths(what, posixpath.join(log_directory, log_path))
    if os.path.isdir(posixpath.join(log_directory, log_path)):
        raise InvalidArgument(f"{what} is a directory in the pod's log directory {log_directory}")
    check_dirs(what, log_directory, log_path.split("/")[:-1], symlinks=False)


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
    """The group without a user, masked and read-only paths, AppArmor, the PID
    namespace mode, capability names."""
    if cfg.run_as_group is not None and cfg.run_as_user is None and not cfg.run_as_username:
        raise InvalidArgument(f"{_SC}.run_as_group needs run_as_user or run_as_username (CRI: the runtime MUST refuse it alone)")
    for field in ("masked_paths", "readonly_paths"):
        for n, path in enumerate(getattr(cfg, field)):
            _check_path(f"{_SC}.{field}[{n}]", path)
    if cfg.apparmor == ProfileType.LOCALHOST and not cfg.apparmor_localhost_ref.removeprefix("localhost/"):
        raise InvalidArgument(f"{_SC}.apparmor.localhost_ref must name a profile for a Localhost profile_type")
    if cfg.pid_mode == NsMode.TARGET and not cfg.pid_target_id:
        raise InvalidArgument(f"{_SC}.namespace_options.target_id must name a container when pid is TARGET")
    for field in ("add_capabilities", "drop_capabilities"):
        for name in getattr(cfg, field):
            if capability_name(name) not in (*ALL_CAPABILITIES, "CAP_ALL"):
                raise InvalidArgument(f"{_SC}.capabilities.{field}: unknown capability {name!r:.100}")


def capability_name(name: str) -> str:
    """CRI takes names with or without "CAP_", in any case; "ALL" means every one."""
    upper = name.upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def check_resources(field: str, r: Resources, min_memory: int = MIN_MEMORY) -> None:
    """What runc would refuse with an unhelpful message, named here instead.
    `min_memory`: 0 for an amount that is no process's whole limit (a pod's overhead)."""
    if 0 < r.memory_limit < min_memory:
        raise InvalidArgument(f"{field}.memory_limit_in_bytes {r.memory_limit} is too low: a container needs at least {min_memory}")
    if r.memory_swap_limit and not r.memory_limit:
        raise InvalidArgument(f"{field}.memory_swap_limit_in_bytes needs memory_limit_in_bytes (swap counts on top of it)")
    if r.memory_swap_limit > 0 and r.memory_swap_limit < r.memory_limit:
        raise InvalidArgument(f"{field}.memory_swap_limit_in_bytes {r.memory_swap_limit} is memory plus swap: "
                              f"it must be at least memory_limit_in_bytes ({r.memory_limit}), or -1 for unlimited")
    for name in ("cpuset_cpus", "cpuset_mems"):
        if value := getattr(r, name):
            try:
                hostfit.id_list(value)
            except ValueError as exc:
                raise InvalidArgument(f"{field}.{name} {value!r:.100}: not a list like 0-3,8: {exc}") from None
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


def check_host_fit(field: str, r: Resources) -> None:
    """The CPUs, memory nodes, page sizes and cgroup controllers the request
    names must be this host's (for create and for update)."""
    for name, online, what in (("cpuset_cpus", hostfit.online_cpus, "CPUs"), ("cpuset_mems", hostfit.online_nodes, "memory nodes")):
        if value := getattr(r, name):  # sysfs is read only for a request that names some
            if missing := hostfit.id_list(value) - (have := online()):
                raise InvalidArgument(f"{field}.{name} {value!r}: this host has no {what} {_ids(missing)} "
                                      f"(online: {_ids(have)})")
    sizes = hostfit.hugepage_sizes()
    for n, h in enumerate(r.hugepage_limits):
        if h.page_size not in sizes:
            raise InvalidArgument(f"{field}.hugepage_limits[{n}].page_size {h.page_size}: this host has no such "
                                  f"huge pages (it has: {', '.join(sorted(sizes)) or 'none'})")
    if r.unified and not cgroups.unified():
        raise InvalidArgument(f"{field}.unified: cgroup v2 only, and this host has cgroup v1")
    for key in r.unified:
        controller = key.split(".", 1)[0]
        if controller == "cgroup":
            raise InvalidArgument(f"{field}.unified: {key} is the cgroup's own interface, not a resource")
        if cgroups.unified() and not cgroups.available(controller):
            raise InvalidArgument(f"{field}.unified: {key}: this host has no {controller} controller")


def _ids(ids: frozenset[int]) -> str:
    shown = sorted(ids)[:16]
    return ",".join(map(str, shown)) + (",..." if len(ids) > len(shown) else "")


def _check_path(field: str, path: str, dots: bool = False) -> None:
    """Absolute, no NUL, within the kernel's limits; without '..' unless
    `dots` (a path runc resolves in the container's root, or the host's own)."""
    if not posixpath.isabs(path) or "\0" in path or (not dots and ".." in path.split("/")):
        rule = "absolute" if dots else "absolute, without '..'"
        raise InvalidArgument(f"{field} {path!r:.200} must be {rule}{', without a NUL byte' if chr(0) in path else ''}")
    check_path_lengths(f"{field} {path!r:.200}", path)


def check_pod_ready(pod: SandboxState, ready: bool) -> None:
    if pod.stopped or not ready:
        raise FailedPrecondition(f"pod sandbox {pod.id} is not ready; containers are created in ready pods only")
