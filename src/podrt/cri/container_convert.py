"""CRI container messages <-> podrt's container model."""

from __future__ import annotations

import json

from podrt.api.runtime import v1 as cri
from podrt.container.manager import ContainerView
from podrt.container.model import ContainerConfig, ContainerStatus, Mount, Propagation, Resources
from podrt.cri.fields import enum_value, id_value, in_range
from podrt.errors import InvalidArgument
from podrt.cri.sandbox_convert import NS_MODES, PROFILES
from podrt.oci.seccomp import ProfileType
from podrt.selinux import SelinuxOptions

_PROPAGATION = {cri.MountPropagation.PROPAGATION_PRIVATE: Propagation.PRIVATE,
                cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: Propagation.HOST_TO_CONTAINER,
                cri.MountPropagation.PROPAGATION_BIDIRECTIONAL: Propagation.BIDIRECTIONAL}
_PROPAGATION_BACK = {v: k for k, v in _PROPAGATION.items()}
STATE = {ContainerStatus.CREATED: cri.ContainerState.CONTAINER_CREATED,
         ContainerStatus.RUNNING: cri.ContainerState.CONTAINER_RUNNING,
         ContainerStatus.EXITED: cri.ContainerState.CONTAINER_EXITED,
         ContainerStatus.UNKNOWN: cri.ContainerState.CONTAINER_UNKNOWN}
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
    mounts = tuple(
        Mount(m.container_path, m.host_path, m.readonly,
              enum_value(f"config.mounts[{i}].propagation", _PROPAGATION, m.propagation))
        for i, m in enumerate(c.mounts))
    return ContainerConfig(
        name=c.metadata.name,
        attempt=in_range("config.metadata.attempt", c.metadata.attempt, 0, 2**32 - 1),
        image=c.image.image,
        command=tuple(c.command),
        args=tuple(c.args),
        working_dir=c.working_dir,
        envs=tuple((e.key, _text(f"config.envs[{i}].value", e.value)) for i, e in enumerate(c.envs)),
        mounts=mounts,
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
        add_capabilities=tuple(sc.capabilities.add_capabilities) if sc.is_set("capabilities") else (),
        drop_capabilities=tuple(sc.capabilities.drop_capabilities) if sc.is_set("capabilities") else (),
        seccomp=seccomp,
        seccomp_localhost_ref=ref,
        selinux=SelinuxOptions(se.user, se.role, se.type, se.level) if se else None,
        resources=resources("config.linux.resources", res),
        pid_mode=enum_value(f"{_SC}.namespace_options.pid", NS_MODES, sc.namespace_options.pid),
        stdin=c.stdin,
        tty=c.tty,
    )


def resources(field: str, res: cri.LinuxContainerResources) -> Resources:
    return Resources(
        cpu_shares=in_range(f"{field}.cpu_shares", res.cpu_shares, 0, 262144),
        cpu_quota=res.cpu_quota if res.cpu_quota in (0, -1) else in_range(f"{field}.cpu_quota", res.cpu_quota, 1000, MAX_INT64),
        cpu_period=res.cpu_period if res.cpu_period == 0 else in_range(f"{field}.cpu_period", res.cpu_period, 1000, 1_000_000),
        memory_limit=in_range(f"{field}.memory_limit_in_bytes", res.memory_limit_in_bytes, 0, MAX_INT64),
        cpuset_cpus=res.cpuset_cpus, cpuset_mems=res.cpuset_mems)


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


def container_status(view: ContainerView, verbose_info: dict[str, object] | None) -> cri.ContainerStatusResponse:
    s = view.state
    r = s.config.resources
    status = cri.ContainerStatus(
        id=s.id, metadata=_metadata(view), state=STATE[view.status], created_at=s.created_at,
        started_at=s.started_at, finished_at=s.finished_at, exit_code=s.exit_code or 0,
        image=cri.ImageSpec(image=s.image_ref), image_ref=s.image_id, image_id=s.image_id,
        reason=s.reason, labels=dict(s.config.labels), annotations=dict(s.config.annotations),
        mounts=[cri.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                          propagation=_PROPAGATION_BACK[m.propagation]) for m in s.config.mounts],
        log_path=s.log_path,
        resources=cri.ContainerResources(linux=cri.LinuxContainerResources(
            cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
            memory_limit_in_bytes=r.memory_limit, cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems)),
    )
    info = {"info": json.dumps(verbose_info)} if verbose_info is not None else {}
    return cri.ContainerStatusResponse(status=status, info=info)
