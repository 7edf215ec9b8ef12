"""The infra container's OCI spec: a pod's request and the paths earlier
steps decided (InfraPlan), turned into the general builder's SpecInput.
The InfraSpec step calls infra_spec through SandboxDeps.build_spec: the pod's
rules live here with the manager, and steps/ imports nothing from sandbox/.

Modelled on CRI-O's infra container: a read-only rootfs, the default small
capability set, the pod's namespaces (the network one joined by path, since
podrt creates the netns before the infra), and nothing the pause process
does not need. A pod without an infra process (PodNamespaces) keeps the
spec as its record (PodSandboxStatus' runtimeSpec, its cgroupsPath for the
orphan sweep), naming the IPC and UTS namespaces podrt pins.
"""

from __future__ import annotations

from typing import Any

from podrt.errors import InvalidArgument
from podrt.host import cgroups
from podrt.model.sandbox import InfraPlan, SandboxConfig
from podrt.oci.spec import BIND_RO, Namespace, SpecInput, bind, build_spec, standard_mounts
from podrt.sandbox.annotations import sandbox_annotations
from podrt.sandbox.validate import pod_sysctls, seccomp_profile
from podrt.security.selinux import process_label
from podrt.steps.sandbox.context import SandboxContext, SandboxDeps
from podrt.steps.sandbox.podns import pinned_kinds


def infra_spec(ctx: SandboxContext, deps: SandboxDeps) -> dict[str, Any]:
    """SandboxDeps.build_spec: the InfraSpec step's spec."""
    return build_infra_spec(infra_plan(ctx, deps))


def infra_plan(ctx: SandboxContext, deps: SandboxDeps) -> InfraPlan:
    """The pod's request plus every path and value the earlier steps decided."""
    cfg, rt, pause = ctx.config, deps.config.runtime, ctx.pause
    pinned = () if cfg.needs_infra(rt.drop_infra_ctr) else pinned_kinds(cfg)  # PodNamespaces' pins, made next
    assert pause is not None and ctx.rootfs, "the Rootfs step ran first"
    try:
        seccomp = seccomp_profile(cfg, deps.config)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return InfraPlan(
        sandbox_id=ctx.id,
        config=cfg,
        rootfs=ctx.rootfs,
        process_args=pause.command,
        hostname="" if cfg.host_network else ctx.hostname,
        hostname_file=ctx.hostname_file,
        resolv_conf=ctx.resolv_conf,
        shm_path=ctx.shm_path,
        netns_path=ctx.netns_path,
        userns_path=ctx.userns_path,
        ipc_path=str(deps.ns_pin("ipc", ctx.id)) if "ipc" in pinned else None,
        uts_path=str(deps.ns_pin("uts", ctx.id)) if "uts" in pinned else None,
        cgroups_path=ctx.cgroups_path,
        oom_score_adj=deps.oom_score_adj,
        cpu_shares=rt.infra_cpu_shares,
        sysctls=pod_sysctls(cfg, deps.config),
        seccomp=seccomp,
        annotations=sandbox_annotations(ctx, pause.stop_signal),
        selinux_label=process_label(cfg.selinux, shares_host=cfg.host_pid or cfg.host_ipc),
    )


def build_infra_spec(plan: InfraPlan) -> dict[str, Any]:
    """Raises ValueError when the plan is inconsistent (a pod network
    namespace without a netns path to join)."""
    cfg = plan.config
    if not cfg.host_network and plan.netns_path is None:
        raise ValueError(f"sandbox {plan.sandbox_id}: pod network namespace needs a netns_path")
    return build_spec(SpecInput(
        rootfs=plan.rootfs,
        readonly_rootfs=True,
        args=plan.process_args,
        uid=cfg.run_as_user if cfg.run_as_user is not None else 0,
        gid=cfg.run_as_group if cfg.run_as_group is not None else 0,
        additional_gids=cfg.supplemental_groups,
        privileged=cfg.privileged,
        no_new_privileges=not cfg.privileged,  # privileged pods may need setuid binaries
        # Host-network pods share the host's UTS namespace (as in CRI-O), and
        # runc refuses a hostname without a UTS namespace of its own.
        hostname="" if cfg.host_network else plan.hostname,
        namespaces=_namespaces(plan),
        mounts=tuple(_mounts(plan)),
        cgroups_path=plan.cgroups_path,
        resources={"cpu": {"shares": plan.cpu_shares}},
        sysctls=plan.sysctls,
        seccomp=plan.seccomp,
        selinux_label=plan.selinux_label,
        oom_score_adj=plan.oom_score_adj,
        annotations=plan.annotations,
        **userns_mappings(cfg),
    ))


def _mounts(plan: InfraPlan) -> list[dict[str, Any]]:
    return standard_mounts(own_netns=not plan.config.host_network) + pod_file_binds(
        plan.shm_path, plan.hostname_file, plan.resolv_conf)


def pod_file_binds(shm_path: str | None, hostname_file: str, resolv_conf: str | None) -> list[dict[str, Any]]:
    """What every container of a pod (its infra too) shares: the pod's shm
    tmpfs (made by an earlier step so it outlives the infra process), or the
    host's /dev/shm with host IPC; its hostname and resolv.conf, read-only."""
    mounts = [bind(shm_path or "/dev/shm", "/dev/shm", ("rw", "bind"))]
    if hostname_file:
        mounts.append(bind(hostname_file, "/etc/hostname", BIND_RO))
    if resolv_conf:
        mounts.append(bind(resolv_conf, "/etc/resolv.conf", BIND_RO))
    return mounts


def userns_mappings(cfg: SandboxConfig) -> dict[str, Any]:
    """SpecInput's uid and gid ranges of a pod with a user namespace, its infra's
    and every container's (runc 1.1 wants them when it joins the namespace, and
    writes none then)."""
    if not cfg.own_userns:
        return {}
    ranges = {kind: tuple((m.container_id, m.host_id, m.length) for m in getattr(cfg.userns, kind)) for kind in ("uids", "gids")}
    return {"uid_mappings": ranges["uids"], "gid_mappings": ranges["gids"]}


def _namespaces(plan: InfraPlan) -> tuple[Namespace, ...]:
    """The pod's user namespace, if it has one (first: runc joins it before
    the others). A cgroup namespace on v2 only, as containerd and CRI-O make
    one there (runc 1.1 on v1 shows the container's cgroups through its cgroup
    mount without one)."""
    cfg = plan.config
    namespaces: list[Namespace] = [Namespace("user", plan.userns_path)] if plan.userns_path else []
    if not cfg.host_pid:
        namespaces.append(Namespace("pid"))
    if not cfg.host_network:
        assert plan.netns_path is not None  # checked by build_infra_spec
        namespaces.append(Namespace("network", plan.netns_path))
    if not cfg.host_ipc:
        namespaces.append(Namespace("ipc", plan.ipc_path or ""))
    if not cfg.host_network:
        namespaces.append(Namespace("uts", plan.uts_path or ""))
    namespaces.append(Namespace("mount"))
    if cgroups.unified() and not cfg.privileged:
        namespaces.append(Namespace("cgroup"))
    return tuple(namespaces)
