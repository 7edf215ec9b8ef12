"""CRI container messages <-> podrt's container model."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import attrs
import betterproto

from podrt.api.runtime import v1 as cri
from podrt.container.manager import ContainerView
from podrt.container.validate import MIN_MEMORY, check_host_fit, check_resources
from podrt.cri.fields import enum_value, id_value, in_range, or_unset, signal_name, wire_enum, wire_signal
from podrt.cri.sandbox_convert import NS_MODES, PROFILES, userns_options
from podrt.errors import InvalidArgument
from podrt.model.container import (
    ContainerConfig,
    ContainerStatus,
    ContainerUser,
    Device,
    GroupsPolicy,
    HugepageLimit,
    Mount,
    Propagation,
    Resources,
)
from podrt.oci.cdi import names as cdi_names
from podrt.security.seccomp import ProfileType
from podrt.security.selinux import SelinuxOptions
from podrt.state.records import SandboxState

_PROPAGATION = {cri.MountPropagation.PROPAGATION_PRIVATE: Propagation.PRIVATE,
                cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: Propagation.HOST_TO_CONTAINER,
                cri.MountPropagation.PROPAGATION_BIDIRECTIONAL: Propagation.BIDIRECTIONAL}
_PROPAGATION_BACK = wire_enum({v: k for k, v in _PROPAGATION.items()}, cri.MountPropagation)
_GROUPS_POLICY = {cri.SupplementalGroupsPolicy.Merge: GroupsPolicy.MERGE,
                  cri.SupplementalGroupsPolicy.Strict: GroupsPolicy.STRICT}
STATE = wire_enum({ContainerStatus.CREATED: cri.ContainerState.CONTAINER_CREATED,
                   ContainerStatus.RUNNING: cri.ContainerState.CONTAINER_RUNNING,
                   ContainerStatus.EXITED: cri.ContainerState.CONTAINER_EXITED,
                   ContainerStatus.UNKNOWN: cri.ContainerState.CONTAINER_UNKNOWN}, cri.ContainerState)
_SC = "config.linux.security_context"
MAX_INT64 = 2**63 - 1


def container_config(req: cri.CreateContainerRequest) -> ContainerConfig:
    c = req.config
    linux = c.linux
    sc = linux.security_context
    res = linux.resources
    se = sc.selinux_options if sc.is_set("selinux_options") else None
    seccomp, ref = ProfileType.UNCONFINED, ""
    if sc.is_set("seccomp") and sc.seccomp is not None:
        seccomp = enum_value(f"{_SC}.seccomp.profile_type", PROFILES, sc.seccomp.profile_type)
        ref = sc.seccomp.localhost_ref
    apparmor, apparmor_ref = _apparmor(sc)
    return ContainerConfig(
        name=c.metadata.name,
        attempt=in_range("config.metadata.attempt", c.metadata.attempt, 0, 2**32 - 1),
        image=c.image.image,
        command=tuple(c.command),
        args=tuple(c.args),
        working_dir=c.working_dir,
        envs=tuple((e.key, _text(f"config.envs[{i}].value", e.value)) for i, e in enumerate(c.envs)),
        mounts=tuple(_mount(f"config.mounts[{i}]", m) for i, m in enumerate(c.mounts)),
        devices=tuple(Device(d.container_path, d.host_path, d.permissions) for d in c.devices),
        cdi_devices=_cdi_devices(c),
        labels=dict(c.labels),
        annotations=dict(c.annotations),
        log_path=c.log_path,
        privileged=sc.privileged,
        readonly_rootfs=sc.readonly_rootfs,
        no_new_privs=sc.no_new_privs,
        run_as_user=id_value(f"{_SC}.run_as_user", sc.run_as_user.value) if sc.is_set("run_as_user") else None,
        run_as_group=id_value(f"{_SC}.run_as_group", sc.run_as_group.value) if sc.is_set("run_as_group") else None,
        run_as_username=sc.run_as_username,
        supplemental_groups=tuple(id_value(f"{_SC}.supplemental_groups", g) for g in sc.supplemental_groups),
        groups_policy=enum_value(f"{_SC}.supplemental_groups_policy", _GROUPS_POLICY, sc.supplemental_groups_policy),
        add_capabilities=tuple(sc.capabilities.add_capabilities) if sc.is_set("capabilities") else (),
        drop_capabilities=tuple(sc.capabilities.drop_capabilities) if sc.is_set("capabilities") else (),
        seccomp=seccomp,
        seccomp_localhost_ref=ref,
        selinux=SelinuxOptions(se.user, se.role, se.type, se.level) if se else None,
        apparmor=apparmor,
        apparmor_localhost_ref=apparmor_ref,
        masked_paths=tuple(sc.masked_paths),
        readonly_paths=tuple(sc.readonly_paths),
        resources=resources("config.linux.resources", res),
        pid_mode=enum_value(f"{_SC}.namespace_options.pid", NS_MODES, sc.namespace_options.pid),
        pid_target_id=sc.namespace_options.target_id,
        userns=userns_options(f"{_SC}.namespace_options.userns_options", sc.namespace_options),
        stdin=c.stdin,
        stdin_once=c.stdin_once,
        tty=c.tty,
        stop_signal=signal_name("config.stop_signal", c.stop_signal),
    )


def resources(field: str, res: cri.LinuxContainerResources, min_memory: int = MIN_MEMORY) -> Resources:
    """Range-checked and checked as a whole (container.validate.check_resources); for create and
    update, and a pod's (UpdatePodSandboxResources: its overhead without a memory floor)."""
    out = Resources(
        cpu_shares=in_range(f"{field}.cpu_shares", res.cpu_shares, 0, 262144),
        cpu_quota=res.cpu_quota if res.cpu_quota in (0, -1) else in_range(f"{field}.cpu_quota", res.cpu_quota, 1000, MAX_INT64),
        cpu_period=res.cpu_period if res.cpu_period == 0 else in_range(f"{field}.cpu_period", res.cpu_period, 1000, 1_000_000),
        memory_limit=in_range(f"{field}.memory_limit_in_bytes", res.memory_limit_in_bytes, 0, MAX_INT64),
        cpuset_cpus=res.cpuset_cpus, cpuset_mems=res.cpuset_mems,
        memory_swap_limit=in_range(f"{field}.memory_swap_limit_in_bytes", res.memory_swap_limit_in_bytes, -1, MAX_INT64),
        oom_score_adj=in_range(f"{field}.oom_score_adj", res.oom_score_adj, -1000, 1000),
        hugepage_limits=tuple(HugepageLimit(h.page_size, h.limit) for h in res.hugepage_limits),
        unified=dict(res.unified))
    check_resources(field, out, min_memory)
    return out


def _mount(field: str, m: cri.Mount) -> Mount:
    """ID-mapped mounts are refused: podrt does not advertise them
    (RuntimeHandlerFeatures), so a kubelet sends none. recursive_read_only is
    checked by container.validate (its form) and container.spec (the handler)."""
    image = m.image.image if m.image is not None else ""
    if image and m.host_path:
        raise InvalidArgument(f"{field}: an image volume has no host_path (got {m.host_path!r})")
    if m.image_sub_path and not image:
        raise InvalidArgument(f"{field}.image_sub_path needs an image")
    if m.uid_mappings or m.gid_mappings:
        raise InvalidArgument(f"{field}: ID-mapped mounts (uidMappings, gidMappings) are not supported")
    return Mount(m.container_path, m.host_path, m.readonly, enum_value(f"{field}.propagation", _PROPAGATION, m.propagation),
                 selinux_relabel=m.selinux_relabel, image=image, image_sub_path=m.image_sub_path,
                 recursive_read_only=m.recursive_read_only)


def _cdi_devices(c: cri.ContainerConfig) -> tuple[str, ...]:
    """CDI_devices, then those of the cdi.k8s.io/ annotations not among them (as CRI-O and
    containerd take both); each a fully qualified name. Whether a spec defines it: the spec builder."""
    asked = [(f"config.CDI_devices[{i}].name", d.name) for i, d in enumerate(c.cdi_devices)]
    asked += [(f"config.annotations[{key!r}]", name) for key, name in cdi_names.annotated(c.annotations)]
    for field, name in asked:
        try:
            cdi_names.parse_qualified(name)
        except ValueError as exc:
            raise InvalidArgument(f"{field}: {exc}") from None
    return tuple(dict.fromkeys(name for _field, name in asked))


def _apparmor(sc: cri.LinuxContainerSecurityContext) -> tuple[ProfileType, str]:
    """The apparmor field, else the deprecated apparmor_profile string
    ("runtime/default", "unconfined", "localhost/<name>"; "" is the runtime default)."""
    if sc.is_set("apparmor") and sc.apparmor is not None:
        kind = enum_value(f"{_SC}.apparmor.profile_type", PROFILES, sc.apparmor.profile_type)
        return kind, sc.apparmor.localhost_ref if kind == ProfileType.LOCALHOST else ""
    legacy = sc.apparmor_profile
    if legacy.startswith("localhost/"):
        return ProfileType.LOCALHOST, legacy.removeprefix("localhost/")
    if legacy == "unconfined":
        return ProfileType.UNCONFINED, ""
    if legacy in ("", "runtime/default"):
        return ProfileType.RUNTIME_DEFAULT, ""
    raise InvalidArgument(f"{_SC}.apparmor_profile {legacy!r}: must be runtime/default, unconfined or localhost/<name>")


def container_user(user: ContainerUser) -> cri.ContainerUser:
    """ContainerStatus.user from the ids the container runs with (model.container.spec_user)."""
    return cri.ContainerUser(linux=cri.LinuxContainerUser(uid=user.uid, gid=user.gid,
                                                          supplemental_groups=list(user.supplemental_groups)))


def _text(field: str, value: bytes | str) -> str:
    """KeyValue.value is bytes on the wire here (string in upstream CRI: the same encoding)."""
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"{field}: not UTF-8") from None


def _metadata(view: ContainerView) -> cri.ContainerMetadata:
    return cri.ContainerMetadata(name=view.state.config.name, attempt=view.state.config.attempt)


def container(view: ContainerView) -> cri.Container:
    s = view.state
    return cri.Container(id=s.id, pod_sandbox_id=s.sandbox_id, metadata=_metadata(view),
                         image=cri.ImageSpec(image=s.image_id), image_ref=s.image_id, image_id=s.image_id,
                         state=STATE[view.status], created_at=s.created_at, labels=dict(s.config.labels),
                         annotations=dict(s.config.annotations))


def linux_resources(r: Resources) -> cri.LinuxContainerResources:
    return cri.LinuxContainerResources(
        cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit, cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems,
        memory_swap_limit_in_bytes=r.memory_swap_limit, oom_score_adj=r.oom_score_adj,
        hugepage_limits=[cri.HugepageLimit(page_size=h.page_size, limit=h.limit) for h in r.hugepage_limits],
        unified=dict(r.unified))


def pod_resources(req: cri.UpdatePodSandboxResourcesRequest) -> tuple[Resources, Resources]:
    """UpdatePodSandboxResources' (overhead, resources), each checked as a
    container's are (form, then what this host has); an overhead is no
    process's whole limit, so it has no memory floor."""
    overhead = resources("overhead", req.overhead, min_memory=0)
    total = resources("resources", req.resources)
    for field, r in (("overhead", overhead), ("resources", total)):
        check_host_fit(field, r)
    return overhead, total


def pod_resources_info(s: SandboxState) -> dict[str, object]:
    """PodSandboxStatus' verbose info: the last UpdatePodSandboxResources in CRI's names (containerd keeps it so)."""
    return {key: linux_resources(r).to_pydict(casing=betterproto.Casing.SNAKE)  # type: ignore[arg-type]  # an enum of functions
            for key in ("overhead", "resources") if (r := getattr(s, key)) is not None}


# A status is only encoded, never changed: its parts that many containers have
# alike are made once and shared (betterproto: ~0.7 ms of a ContainerStatus's
# ~1.2 ms, made once a container, which is when critest asks).
@functools.lru_cache(maxsize=256)
def _image_spec(image: str) -> cri.ImageSpec:
    return cri.ImageSpec(image=image)


@functools.lru_cache(maxsize=64)
def _status_user(user: ContainerUser) -> cri.ContainerUser:
    return container_user(user)


_STATUS_RESOURCES: dict[tuple[object, ...], cri.ContainerResources] = {}


def _status_resources(r: Resources) -> cri.ContainerResources:
    key = tuple(tuple(v.items()) if isinstance(v, Mapping) else v for v in attrs.astuple(r, recurse=False))
    found = _STATUS_RESOURCES.get(key)
    if found is None:
        if len(_STATUS_RESOURCES) >= 256:
            _STATUS_RESOURCES.clear()
        found = _STATUS_RESOURCES[key] = cri.ContainerResources(linux=linux_resources(r))
    return found


def container_status(view: ContainerView) -> cri.ContainerStatus:
    s = view.state
    return cri.ContainerStatus(
        id=s.id, metadata=_metadata(view), state=STATE[view.status], created_at=s.created_at,
        started_at=s.started_at, finished_at=s.finished_at, exit_code=s.exit_code or 0,
        image=_image_spec(s.image_ref), image_ref=s.image_id, image_id=s.image_id,
        reason=s.reason, message=s.message, labels=dict(s.config.labels), annotations=dict(s.config.annotations),
        mounts=[cri.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                          propagation=_PROPAGATION_BACK[m.propagation], recursive_read_only=m.recursive_read_only,
                          image=or_unset(cri.ImageSpec(image=m.image) if m.image else None), image_sub_path=m.image_sub_path)
                for m in s.config.mounts],
        log_path=s.log_path, user=or_unset(_status_user(s.user) if s.user else None),
        resources=_status_resources(s.config.resources),
        stop_signal=wire_signal(s.stop_signal),  # the one in effect: the request's, the image's, or SIGTERM (containerd's)
    )
