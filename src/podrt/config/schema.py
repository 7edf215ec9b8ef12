"""The configuration's one schema: attrs classes, their defaults and checks.

Field types drive type checking, field validators drive value checking (also
on direct construction), field defaults drive the defaults, and
``dump_config`` walks the same fields.
"""

import os
import re

import attrs

from podrt.config.checks import (
    OCTAL_RE,
    SIZE_RE,
    SIZE_UNITS,
    Invalid,
    UnknownRuntimeHandler,
    absolute,
    absolute_or_derived,
    check,
    each,
    in_range,
    matches,
    nonempty,
    one_of,
    positive,
    setting,
    show,
)
from podrt.oci.reference import is_reference


@attrs.frozen
class ApiConfig:
    listen: str = setting("", absolute_or_derived)  # "": <runroot>/podrt.sock
    socket_mode: str = setting("0660", matches(
        OCTAL_RE, 'must be an octal mode string like "0660" (at most 0777)'))
    stream_address: str = setting("127.0.0.1", nonempty)
    stream_port: int = setting(0, in_range(0, 65535))  # 0: a free port, chosen at each start
    # a session with nothing sent either way for this long is closed; 0 never
    # (the kubelet's streaming-connection-idle-timeout default is 4 h)
    stream_idle_timeout: float = setting(4 * 3600.0, in_range(0))
    stream_max_sessions: int = setting(256, in_range(1))  # more are refused with 503 until some end
    stream_enable_tls: bool = setting(False)
    stream_tls_cert: str = setting("")  # PEM; required with stream_enable_tls
    stream_tls_key: str = setting("")
    stream_tls_ca: str = setting("")  # when set, clients must present a certificate it signed
    max_msg_size: int = setting(16 * 1024 * 1024, in_range(1))
    # the most bytes of one message of a Stream* list (KEP-5825), at most
    # max_msg_size: 4 MiB is the receive limit gRPC clients have by default
    # (the kubelet's is 16 MiB); a single larger item goes alone
    list_chunk_size: int = setting(4 * 1024 * 1024, in_range(1))
    # SIGTERM: calls already running get this long to finish and answer
    # (grpc-go's GracefulStop); whatever still runs then is cut and unwound.
    shutdown_grace: float = setting(30.0, positive)

    @property
    def socket_mode_int(self) -> int:
        return int(self.socket_mode.removeprefix("0o"), 8)


@attrs.frozen
class RuntimeHandler:
    runtime_path: str = attrs.field(validator=absolute)   # required for new handlers
    # runc --root; "": <runroot>/<handler name>, so daemons with their own
    # runroots never see (and never sweep) each other's containers
    runtime_root: str = setting("", absolute_or_derived)
    runtime_type: str = setting("oci", check(lambda v: v == "oci", 'must be "oci"'))


_RUNC = RuntimeHandler(runtime_path="/usr/sbin/runc")


@attrs.frozen
class RuntimeConfig:
    default_runtime: str = setting("runc", nonempty)
    cgroup_manager: str = setting("cgroupfs", one_of("cgroupfs", "systemd"))
    conmon: str = setting("/usr/bin/conmon", absolute)
    conmon_cgroup: str = setting("pod", check(
        lambda v: v == "pod" or (v.endswith(".slice") and len(v) > len(".slice")),
        'must be "pod" or a systemd slice name ending in ".slice"'))
    # as CRI-O's: no infra process for a pod that does not share its PID namespace
    # (namespace_options.pid != POD): podrt pins its namespaces; false: an infra for every pod
    drop_infra_ctr: bool = setting(True)
    infra_oom_score_adj: int = setting(-998, in_range(-1000, 1000))
    infra_cpu_shares: int = setting(2, in_range(2))
    shm_size: str = setting("64Mi", matches(
        SIZE_RE, 'must be a size like "64Mi" (bytes, or a k/Ki/M/Mi/G/Gi suffix)'))
    allow_privileged: bool = setting(True)
    seccomp_enabled: bool = setting(True)
    seccomp_profile: str = setting("", check(lambda v: v == "" or os.path.isabs(v),
                                         'must be "" or an absolute path'))
    default_sysctls: tuple[str, ...] = setting((), each(matches(
        r"[A-Za-z0-9_][A-Za-z0-9_./-]*=.+", 'must be "key=value"')))
    # Pod sysctls: the kubelet's --allowed-unsafe-sysctls is the policy, and podrt
    # applies every namespaced sysctl it sends (as CRI-O and containerd do). Set
    # restrict_unsafe_sysctls to also refuse those outside the kubelet's safe set
    # that allowed_unsafe_sysctls (names, or prefixes ending in "*") does not name.
    restrict_unsafe_sysctls: bool = setting(False)
    allowed_unsafe_sysctls: tuple[str, ...] = setting((), each(matches(
        r"[a-z0-9_][a-z0-9_./-]*\*?", 'must be a sysctl name, or a prefix ending in "*"')))
    sandbox_claim_timeout: float = setting(240.0, positive)
    create_wait_timeout: float = setting(240.0, positive)
    # ExecSync keeps at most this many bytes of each of stdout and stderr; both
    # together stay under the kubelet's 16 MiB message limit
    exec_sync_max_output: int = setting(4 * 1024 * 1024, in_range(1024, 1 << 30))
    runtimes: dict[str, RuntimeHandler] = setting({"runc": _RUNC})
    # CDI spec dirs (.json, .yaml): a device in a later dir replaces one of the same name in an earlier
    cdi_spec_dirs: tuple[str, ...] = setting(("/etc/cdi", "/var/run/cdi"), each(absolute))
    # pods' user namespaces: their pins ("": <runroot>/userns); "refuse": FailedPrecondition where ID-mapped mounts fail
    userns_dir: str = setting("", absolute_or_derived)
    userns_without_idmap: str = setting("refuse", one_of("refuse"))

    def __attrs_post_init__(self) -> None:
        if self.default_runtime not in self.runtimes:
            raise Invalid(f"must name a handler in podrt.runtime.runtimes "
                           f"({', '.join(sorted(self.runtimes)) or 'none'}), "
                           f"got {show(self.default_runtime)}", field="default_runtime")
        if self.cgroup_manager == "cgroupfs" and self.conmon_cgroup != "pod":
            raise Invalid(f'must be "pod" when podrt.runtime.cgroup_manager is "cgroupfs", '
                           f"got {show(self.conmon_cgroup)}", field="conmon_cgroup")

    @property
    def shm_size_bytes(self) -> int:
        number, unit = re.fullmatch(SIZE_RE, self.shm_size).groups()  # type: ignore[union-attr]  # validated
        return int(number) * SIZE_UNITS[unit]


@attrs.frozen
class ImageConfig:
    # the builtin (catatonit, built at start) or an image reference, pulled when first needed
    pause_image: str = setting("podrt.local/pause:builtin", nonempty, check(is_reference, "must be an image reference"))
    # the builtin's command; a pulled pause image runs its own entrypoint and cmd (this when it has none)
    pause_command: tuple[str, ...] = setting(("/catatonit", "-P"), nonempty)
    catatonit_path: str = setting("/usr/bin/catatonit", absolute)
    # containers-registries.conf(5) v2, as CRI-O, Podman and skopeo read it (drop-ins: <file>.d/)
    registries_conf: str = setting("/etc/containers/registries.conf", absolute)
    certs_dirs: tuple[str, ...] = setting(("/etc/containers/certs.d", "/etc/docker/certs.d"), each(absolute))
    global_auth_file: str = setting("", check(lambda v: v == "" or os.path.isabs(v), 'must be "" or an absolute path'))
    max_concurrent_downloads: int = setting(3, in_range(1, 64))
    # a pull that receives no byte for this long fails (CRI-O's pull_progress_timeout)
    pull_progress_timeout: float = setting(300.0, positive)


@attrs.frozen
class NetworkConfig:
    network_dir: str = setting("/etc/cni/net.d", absolute)
    plugin_dirs: tuple[str, ...] = setting(("/usr/lib/cni", "/opt/cni/bin"),
                                      nonempty, each(absolute))
    netns_dir: str = setting("", absolute_or_derived)  # "": <runroot>/netns
    plugin_timeout: float = setting(60.0, positive)  # per plugin call; then its process group is killed


@attrs.frozen
class MetricsConfig:
    enable_metrics: bool = setting(False)
    metrics_host: str = setting("127.0.0.1", nonempty)
    metrics_port: int = setting(9090, in_range(1, 65535))


# CRI-O's groups of ListPodSandboxMetrics' metrics (its [crio.stats] included_pod_metrics)
POD_METRIC_GROUPS = ("cpu", "disk", "diskIO", "hugetlb", "memory", "network", "oom", "process", "spec", "pressure")


@attrs.frozen
class StatsConfig:
    # ListPodSandboxMetrics: the groups collected; [] only container_last_seen (as CRI-O), ["all"] every group
    included_pod_metrics: tuple[str, ...] = setting((), each(one_of(*POD_METRIC_GROUPS, "all")), check(
        lambda v: "all" not in v or len(v) == 1, '"all" must be the only group'))
    # a collection serves every call for this long (seconds); 0: each call collects (concurrent ones share the pass)
    collection_period: float = setting(1.0, in_range(0, 3600))

    @property
    def pod_metric_groups(self) -> frozenset[str]:
        return frozenset(POD_METRIC_GROUPS if self.included_pod_metrics == ("all",) else self.included_pod_metrics)


@attrs.frozen
class DebugConfig:
    fault_points: tuple[str, ...] = setting((), each(matches(
        r"[A-Za-z0-9_.-]+:(?:before|after)", 'must be "stepname:before" or "stepname:after"')))
    # how long a streaming URL stays valid; the kubelet's is a minute (tests shorten it)
    stream_token_ttl: float = setting(60.0, positive)
    # log (ERROR, with the stack) and count every blocking call made on the event loop once serving (aio/blocking.py)
    detect_blocking: bool = setting(False)


@attrs.frozen
class Config:
    root: str = setting("/var/lib/podrt", absolute)
    runroot: str = setting("/run/podrt", absolute)
    log_dir: str = setting("/var/log/pods", absolute)
    log_level: str = setting("info", one_of("debug", "info", "warning", "error"))
    # the event loop's thread runs at this nice value, its threads and children at 0 (aio/priority.py); 0: as started
    loop_nice: int = setting(-20, in_range(-20, 0))
    api: ApiConfig = attrs.field(factory=ApiConfig)
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    image: ImageConfig = attrs.field(factory=ImageConfig)
    network: NetworkConfig = attrs.field(factory=NetworkConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    stats: StatsConfig = attrs.field(factory=StatsConfig)
    debug: DebugConfig = attrs.field(factory=DebugConfig)

    def __attrs_post_init__(self) -> None:
        """Fill the runroot-derived paths left "" (frozen: set once, here)."""
        run = self.runroot
        if not self.api.listen:
            object.__setattr__(self, "api", attrs.evolve(self.api, listen=os.path.join(run, "podrt.sock")))
        if not self.network.netns_dir:
            object.__setattr__(self, "network", attrs.evolve(self.network, netns_dir=os.path.join(run, "netns")))
        if not self.runtime.userns_dir:
            object.__setattr__(self, "runtime", attrs.evolve(self.runtime, userns_dir=os.path.join(run, "userns")))
        if any(not h.runtime_root for h in self.runtime.runtimes.values()):
            runtimes = {name: h if h.runtime_root else attrs.evolve(h, runtime_root=_handler_root(run, name))
                        for name, h in self.runtime.runtimes.items()}
            object.__setattr__(self, "runtime", attrs.evolve(self.runtime, runtimes=runtimes))

    def runtime_handler(self, name: str) -> RuntimeHandler:
        try:
            return self.runtime.runtimes[name]
        except KeyError:
            known = ", ".join(sorted(self.runtime.runtimes))
            raise UnknownRuntimeHandler(
                f"unknown runtime handler {name!r} (known: {known})") from None


# What podrt itself keeps in the runroot: a handler of one of these names needs
# an explicit runtime_root (sandbox/container run dirs, conmon's exit files, namespace pins, ID-mapped mounts).
_RUNROOT_ENTRIES = frozenset({"sandboxes", "containers", "exits", "netns", "userns", "ipcns", "utsns", "idmap"})
_HANDLER_DIR_RE = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"  # a RuntimeClass handler: a DNS label


def _handler_root(runroot: str, name: str) -> str:
    """<runroot>/<name>: /run/podrt/runc for the default, as before runroots were honoured."""
    if re.fullmatch(_HANDLER_DIR_RE, name) is None or name in _RUNROOT_ENTRIES:
        raise Invalid(f"must be set: the handler's name {show(name)} cannot be its directory in the runroot "
                       f"(a name must be a DNS label other than {', '.join(sorted(_RUNROOT_ENTRIES))})",
                       field="runtime", sub=("runtimes", name, "runtime_root"))
    return os.path.join(runroot, name)

