"""Checks on a RunPodSandbox request, made before anything is created.

Each refusal is an InvalidArgument whose message names the field, so the
person reading the kubelet event knows what to change.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping

from podrt.config import Config
from podrt.errors import InvalidArgument
from podrt.host import cgroups
from podrt.model.sandbox import IdMapping, NsMode, SandboxConfig, UserNamespace
from podrt.security.seccomp import profile_for

_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?")
# Kubernetes object names (DNS subdomains; any case for UIDs): they go into
# k8s_<name>_<ns>_<uid>_<attempt> and into CNI_ARGS, where ';' or '=' would break it.
NAME_PART = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SYSCTL = re.compile(r"[a-z0-9_][a-z0-9_./-]*")
_DNS_TOKEN = re.compile(r"[^\s#;]+")

# The kubelet's safe set: namespaced and harmless to other pods.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
# the IPC namespace's own (runc's list): other kernel.* names are the node's
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})


NAME_MAX, PATH_MAX = 255, 4095  # bytes of one path component and of a whole path (with room for the NUL)
MAX_DNS_SEARCHES = 32
MAX_DNS_SERVERS = 3


def _ipc_sysctl(key: str) -> bool:
    return key in _IPC_SYSCTLS or key.startswith("fs.mqueue.")


def _label_key(key: str) -> str | None:
    """Kubernetes qualified name rules; returns what is wrong, or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return "name must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
    return None


def check_labels(labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        problem = _label_key(key)
        if problem:
            raise InvalidArgument(f"invalid label key {key!r}: {problem}")
        if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
            raise InvalidArgument(f"invalid value {value!r} of label {key!r}: must be empty or 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric")


def _check_tokens(field: str, values: Iterable[str]) -> None:
    for v in values:
        if not _DNS_TOKEN.fullmatch(v):
            raise InvalidArgument(f"invalid dns_config.{field} entry {v!r}: must be one word without spaces, '#' or ';'")


def check_dns(cfg: SandboxConfig) -> None:
    if cfg.dns is None:
        return
    if len(cfg.dns.servers) > MAX_DNS_SERVERS:
        raise InvalidArgument(f"dns_config.servers: at most {MAX_DNS_SERVERS} name servers, got {len(cfg.dns.servers)}")
    for server in cfg.dns.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidArgument(f"invalid dns_config.servers entry {server!r}: must be an IP address") from None
    if len(cfg.dns.searches) > MAX_DNS_SEARCHES:
        raise InvalidArgument(f"dns_config.searches: at most {MAX_DNS_SEARCHES} domains, got {len(cfg.dns.searches)}")
    _check_tokens("searches", cfg.dns.searches)
    _check_tokens("options", cfg.dns.options)


def check_sysctls(cfg: SandboxConfig, allowed_unsafe: Iterable[str] | None = None) -> None:
    """Well-formed, namespaced, and in a namespace of the pod's own. Whether an
    unsafe one may be set is the kubelet's policy (--allowed-unsafe-sysctls);
    `allowed_unsafe` (not None) restricts them further: podrt.runtime.restrict_unsafe_sysctls."""
    allowed = None if allowed_unsafe is None else tuple(allowed_unsafe)
    for key, value in cfg.sysctls.items():
        if not _SYSCTL.fullmatch(key) or ".." in key:
            raise InvalidArgument(f"invalid sysctl name {key!r}")
        if not value or "\n" in value or "\x00" in value:
            raise InvalidArgument(f"invalid value {value!r} for sysctl {key}")
        is_net, is_ipc = key.startswith("net."), _ipc_sysctl(key)
        if not (is_net or is_ipc):
            raise InvalidArgument(f"sysctl {key} is not one of a pod's own namespaces (net.*, fs.mqueue.* and the IPC "
                                  "namespace's kernel.msg*, sem and shm* limits, as runc takes them): not for a pod")
        if is_net and cfg.host_network:
            raise InvalidArgument(f"sysctl {key} cannot be set for a pod on the host network")
        if is_ipc and cfg.host_ipc:
            raise InvalidArgument(f"sysctl {key} cannot be set for a pod sharing the host IPC namespace")
        if allowed is not None and not _permitted(key, allowed):
            raise InvalidArgument(f"sysctl {key} is unsafe; allow it in podrt.runtime.allowed_unsafe_sysctls "
                                  "(podrt.runtime.restrict_unsafe_sysctls is on)")


def _permitted(key: str, allowed: tuple[str, ...]) -> bool:
    return key in SAFE_SYSCTLS or any(key == p or (p.endswith("*") and key.startswith(p[:-1])) for p in allowed)


def check_hostname(cfg: SandboxConfig) -> None:
    h = cfg.hostname
    if h and (len(h) > 64 or not _HOSTNAME.fullmatch(h)):
        raise InvalidArgument(f"invalid hostname {h!r}: at most 64 characters of [A-Za-z0-9-.]")


def check_metadata(cfg: SandboxConfig) -> None:
    if not cfg.name:
        raise InvalidArgument("PodSandboxConfig.metadata.name must not be empty")
    for field in ("name", "namespace", "uid"):
        value = getattr(cfg, field)
        if value and not NAME_PART.fullmatch(value):
            raise InvalidArgument(f"invalid metadata.{field} {value!r}: must be a Kubernetes name (letters, digits, '-' and '.', at most 253)")


USERNS_FIELD = "linux.security_context.namespace_options.userns_options"


def check_userns(cfg: SandboxConfig) -> None:
    """CRI's rules for a pod's user namespace: NODE (the host's, no mappings) or
    POD with one uid and one gid range that maps container ID 0. A user namespace
    cannot mount /proc for the host's PID namespace, nor mqueue for its IPC one."""
    u, field = cfg.userns, USERNS_FIELD
    if u.mode in (NsMode.CONTAINER, NsMode.TARGET):
        raise InvalidArgument(f"{field}.mode: {u.mode.name} is not supported for user namespaces (POD or NODE)")
    if u.mode == NsMode.NODE:
        if u.uids or u.gids:
            raise InvalidArgument(f"{field}: mode NODE takes no uids or gids (they are for mode POD)")
        return
    for kind in ("uids", "gids"):
        check_mappings(f"{field}.{kind}", getattr(u, kind))
    for shared, what in ((cfg.host_pid, "PID"), (cfg.host_ipc, "IPC")):
        if shared:
            raise InvalidArgument(f"{field}: a pod with a user namespace (mode POD) cannot share the host's {what} namespace")


def check_mappings(field: str, maps: tuple[IdMapping, ...]) -> None:
    if len(maps) != 1:
        raise InvalidArgument(f"{field}: mode POD takes exactly one mapping, got {len(maps)}")
    m = maps[0]
    if m.container_id != 0:
        raise InvalidArgument(f"{field}[0].container_id is {m.container_id}: the mapping must start at container ID 0 (root)")
    if m.length == 0:
        raise InvalidArgument(f"{field}[0].length must be > 0")
    if m.host_id + m.length > 2**32:
        raise InvalidArgument(f"{field}[0]: host IDs {m.host_id} + {m.length} go beyond the last ID ({2**32 - 1})")


def check_same_userns(field: str, given: UserNamespace | None, pod: UserNamespace) -> None:
    """A container's userns_options, when it sends any, must be its pod's (as containerd checks)."""
    if given is not None and given != pod:
        raise InvalidArgument(f"{field} must be the pod's (mode {pod.mode.name}, the same mappings): "
                              "a container runs in its pod's user namespace")


def seccomp_profile(cfg: SandboxConfig, config: Config) -> dict | None:
    """The pod's seccomp profile; ValueError when a profile file does not load."""
    rt = config.runtime
    return profile_for(cfg.seccomp.type, cfg.seccomp.localhost_ref, privileged=cfg.privileged,
                       enabled=rt.seccomp_enabled, default_path=rt.seccomp_profile)


def pod_sysctls(cfg: SandboxConfig, config: Config) -> dict[str, str]:
    """podrt.runtime.default_sysctls under the request's own; defaults that a host
    namespace makes moot (net.* on the host network, IPC ones with host IPC) are left out."""
    out = {}
    for item in config.runtime.default_sysctls:
        key, value = item.split("=", 1)
        if (cfg.host_network and key.startswith("net.")) or (cfg.host_ipc and _ipc_sysctl(key)):
            continue
        out[key] = value
    out.update(cfg.sysctls)
    return out


def _host_strings(cfg: SandboxConfig) -> Iterable[tuple[str, str]]:
    """(field, value) of every string that ends up in a path, a file or a label."""
    yield "log_directory", cfg.log_directory
    yield "linux.cgroup_parent", cfg.cgroup_parent
    yield "seccomp.localhost_ref", cfg.seccomp.localhost_ref
    if cfg.dns:
        for field in ("servers", "searches", "options"):
            yield from ((f"dns_config.{field}", v) for v in getattr(cfg.dns, field))
    if cfg.selinux:
        for field in ("user", "role", "type", "level"):
            yield f"selinux_options.{field}", getattr(cfg.selinux, field)


def check_no_nul(cfg: SandboxConfig) -> None:
    """A NUL cannot be in a path or a file line: the OS call would fail mid-creation."""
    for field, value in _host_strings(cfg):
        if "\x00" in value:
            raise InvalidArgument(f"{field} must not contain a NUL character")


def check_path_lengths(what: str, path: str) -> None:
    """The kernel's limits, named before an OS call answers ENAMETOOLONG mid-creation."""
    encoded = path.encode("utf-8", "surrogateescape")
    if len(encoded) > PATH_MAX:
        raise InvalidArgument(f"{what}: {len(encoded)} bytes, longer than a path may be ({PATH_MAX})")
    if any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise InvalidArgument(f"{what}: a path component is longer than {NAME_MAX} bytes")


def check_dirs(what: str, top: str, parts: Iterable[str], *, symlinks: bool) -> None:
    """The dirs `top`/`parts`... that exist must be directories, so the mkdir
    that makes the rest cannot fail; with `symlinks` false, not symlinks
    either (a file conmon writes must stay below `top`)."""
    path = top
    for part in parts:
        path = os.path.join(path, part)
        if not os.path.lexists(path):
            return
        if (not symlinks and os.path.islink(path)) or not os.path.isdir(path):
            raise InvalidArgument(f"{what}: {path} is not a directory")


def check_request(cfg: SandboxConfig, config: Config) -> None:
    """Every check that needs no host state, in the order a person would fix them."""
    check_metadata(cfg)
    check_no_nul(cfg)
    if cfg.log_directory:
        if not os.path.isabs(cfg.log_directory):
            raise InvalidArgument(f"log_directory {cfg.log_directory!r} must be an absolute path")
        check_path_lengths(f"log_directory {cfg.log_directory!r:.200}", cfg.log_directory)
        check_dirs(f"log_directory {cfg.log_directory!r:.200}", "/", cfg.log_directory.split("/"), symlinks=True)
    if cfg.runtime_handler and cfg.runtime_handler not in config.runtime.runtimes:
        known = ", ".join(sorted(config.runtime.runtimes))
        raise InvalidArgument(f"unknown runtime handler {cfg.runtime_handler!r} (known: {known})")
    if cfg.privileged and not config.runtime.allow_privileged:
        raise InvalidArgument("privileged pod sandboxes are not allowed (podrt.runtime.allow_privileged is false)")
    if cfg.run_as_group is not None and cfg.run_as_user is None:  # as containerd; the CRI says MUST
        raise InvalidArgument("linux.security_context.run_as_group needs run_as_user (CRI: the runtime MUST refuse it alone)")
    for kind in ("network", "pid", "ipc"):
        if getattr(cfg.namespaces, kind) == NsMode.TARGET:  # a container's mode: join another container's
            raise InvalidArgument(f"linux.security_context.namespace_options.{kind}: TARGET is for containers only")
    check_userns(cfg)
    check_labels(cfg.labels)
    check_hostname(cfg)
    check_dns(cfg)
    rt = config.runtime
    check_sysctls(cfg, rt.allowed_unsafe_sysctls if rt.restrict_unsafe_sysctls else None)
    for pm in cfg.port_mappings:  # port numbers were range-checked by the converter
        if pm.host_ip:
            try:
                address = ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise InvalidArgument(f"invalid port mapping host_ip {pm.host_ip!r}") from None
            if getattr(address, "scope_id", None):  # fe80::1%eth0: Python parses a zone, iptables does not
                raise InvalidArgument(f"port mapping host_ip {pm.host_ip!r}: an address with a zone cannot be mapped")
    cgroups.sandbox_cgroup(config.runtime.cgroup_manager, cfg.cgroup_parent, "0" * 64)  # raises on a bad parent
    try:  # read the profile now, before anything is created for the pod
        seccomp_profile(cfg, config)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
