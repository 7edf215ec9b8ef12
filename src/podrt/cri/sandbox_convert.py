"""CRI sandbox messages <-> podrt's sandbox model."""

from __future__ import annotations

import functools

from podrt.api.runtime import v1 as cri
from podrt.cri.fields import enum_value, id_value, in_range, wire_enum
from podrt.model.sandbox import (
    DnsConfig,
    IdMapping,
    NamespaceOptions,
    NsMode,
    PortMapping,
    ProfileType,
    SandboxConfig,
    SeccompProfile,
    SelinuxOptions,
    UserNamespace,
)
from podrt.sandbox.annotations import infra_labels
from podrt.sandbox.manager import SandboxView

NS_MODES = {cri.NamespaceMode.POD: NsMode.POD, cri.NamespaceMode.CONTAINER: NsMode.CONTAINER,
       cri.NamespaceMode.NODE: NsMode.NODE, cri.NamespaceMode.TARGET: NsMode.TARGET}
_NS_BACK = wire_enum({v: k for k, v in NS_MODES.items()}, cri.NamespaceMode)
STATE = wire_enum({True: cri.PodSandboxState.SANDBOX_READY, False: cri.PodSandboxState.SANDBOX_NOTREADY},
                   cri.PodSandboxState)
_PROTO = {cri.Protocol.TCP: "tcp", cri.Protocol.UDP: "udp", cri.Protocol.SCTP: "sctp"}
PROFILES = {
    cri.SecurityProfileProfileType.RuntimeDefault: ProfileType.RUNTIME_DEFAULT,
    cri.SecurityProfileProfileType.Unconfined: ProfileType.UNCONFINED,
    cri.SecurityProfileProfileType.Localhost: ProfileType.LOCALHOST,
}


_SC = "config.linux.security_context"


def _seccomp(sc: cri.LinuxSandboxSecurityContext) -> SeccompProfile:
    if sc.is_set("seccomp") and sc.seccomp is not None:
        kind = enum_value(f"{_SC}.seccomp.profile_type", PROFILES, sc.seccomp.profile_type)
        return SeccompProfile(kind, sc.seccomp.localhost_ref)
    path = sc.seccomp_profile_path  # deprecated field, still sent by old kubelets
    if path in ("runtime/default", "docker/default"):
        return SeccompProfile(ProfileType.RUNTIME_DEFAULT)
    if path.startswith("localhost/"):
        return SeccompProfile(ProfileType.LOCALHOST, path[len("localhost/"):])
    return SeccompProfile(ProfileType.UNCONFINED)


def userns_options(field: str, ns: cri.NamespaceOption) -> UserNamespace | None:
    """namespace_options.userns_options of a pod or a container; None when not sent
    (the node's user namespace). The mappings are checked by sandbox/validate.py."""
    if not ns.is_set("userns_options") or ns.userns_options is None:
        return None
    u = ns.userns_options
    return UserNamespace(enum_value(f"{field}.mode", NS_MODES, u.mode),
                         *(tuple(IdMapping(m.container_id, m.host_id, m.length) for m in maps) for maps in (u.uids, u.gids)))


def _userns_message(u: UserNamespace) -> cri.UserNamespace:
    def maps(ms: tuple[IdMapping, ...]) -> list[cri.IdMapping]:
        return [cri.IdMapping(host_id=m.host_id, container_id=m.container_id, length=m.length) for m in ms]
    return cri.UserNamespace(mode=_NS_BACK[u.mode], uids=maps(u.uids), gids=maps(u.gids))


def sandbox_config(req: cri.RunPodSandboxRequest) -> SandboxConfig:
    c = req.config
    linux = c.linux
    sc = linux.security_context
    ns = sc.namespace_options
    dns = c.dns_config if c.is_set("dns_config") else None
    se = sc.selinux_options if sc.is_set("selinux_options") else None
    port_mappings = tuple(
        PortMapping(enum_value(f"config.port_mappings[{i}].protocol", _PROTO, p.protocol),
                    in_range(f"config.port_mappings[{i}].container_port", p.container_port, 1, 65535),
                    in_range(f"config.port_mappings[{i}].host_port", p.host_port, 0, 65535), p.host_ip)
        for i, p in enumerate(c.port_mappings)
    )
    nso = f"{_SC}.namespace_options"
    namespaces = NamespaceOptions(*(enum_value(f"{nso}.{kind}", NS_MODES, getattr(ns, kind)) for kind in ("network", "pid", "ipc")))
    return SandboxConfig(
        name=c.metadata.name,
        uid=c.metadata.uid,
        namespace=c.metadata.namespace,
        attempt=c.metadata.attempt,
        hostname=c.hostname,
        log_directory=c.log_directory,
        dns=DnsConfig(tuple(dns.servers), tuple(dns.searches), tuple(dns.options)) if dns else None,
        port_mappings=port_mappings,
        labels=dict(c.labels),
        annotations=dict(c.annotations),
        cgroup_parent=linux.cgroup_parent,
        sysctls=dict(linux.sysctls),
        namespaces=namespaces,
        privileged=sc.privileged,
        seccomp=_seccomp(sc),
        selinux=SelinuxOptions(se.user, se.role, se.type, se.level) if se else None,
        run_as_user=id_value(f"{_SC}.run_as_user", sc.run_as_user.value) if sc.is_set("run_as_user") else None,
        run_as_group=id_value(f"{_SC}.run_as_group", sc.run_as_group.value) if sc.is_set("run_as_group") else None,
        supplemental_groups=tuple(id_value(f"{_SC}.supplemental_groups[{i}]", g)
                                  for i, g in enumerate(sc.supplemental_groups)),
        runtime_handler=req.runtime_handler,
        userns=userns_options(f"{nso}.userns_options", ns) or UserNamespace(),
    )


def metadata(cfg: SandboxConfig) -> cri.PodSandboxMetadata:
    return cri.PodSandboxMetadata(name=cfg.name, uid=cfg.uid, namespace=cfg.namespace, attempt=cfg.attempt)


def _state(view: SandboxView) -> cri.PodSandboxState:
    return STATE[view.ready]


def labels(view: SandboxView) -> dict[str, str]:
    return infra_labels(view.state.config.labels)


def pod_sandbox(view: SandboxView) -> cri.PodSandbox:
    s = view.state
    return cri.PodSandbox(
        id=s.id, metadata=metadata(s.config), state=_state(view), created_at=s.created_at,
        labels=labels(view), annotations=dict(s.config.annotations), runtime_handler=s.runtime_handler,
    )


@functools.lru_cache(maxsize=64)
def _linux_status(network: NsMode, pid: NsMode, ipc: NsMode, userns: UserNamespace) -> cri.LinuxPodSandboxStatus:
    """One message per set of namespace modes, in every status that has them
    (a status is only encoded, never changed): betterproto takes ~0.2 ms to
    make these four, half of a pod's status, which critest asks once a pod."""
    return cri.LinuxPodSandboxStatus(namespaces=cri.Namespace(options=cri.NamespaceOption(
        network=_NS_BACK[network], pid=_NS_BACK[pid], ipc=_NS_BACK[ipc], userns_options=_userns_message(userns))))


_NO_NETWORK_STATUS = cri.PodSandboxNetworkStatus()  # shared as _linux_status' messages are


def pod_sandbox_status(view: SandboxView) -> cri.PodSandboxStatus:
    s = view.state
    ns = s.config.namespaces
    network = _NO_NETWORK_STATUS
    if s.ips and not s.config.host_network:
        network = cri.PodSandboxNetworkStatus(ip=s.ips[0], additional_ips=[cri.PodIp(ip=i) for i in s.ips[1:]])
    return cri.PodSandboxStatus(
        id=s.id,
        metadata=metadata(s.config),
        state=_state(view),
        created_at=s.created_at,
        network=network,
        linux=_linux_status(ns.network, ns.pid, ns.ipc, s.config.userns),
        labels=labels(view),
        annotations=dict(s.config.annotations),
        runtime_handler=s.runtime_handler,
    )
