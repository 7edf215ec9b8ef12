"""A container's OCI spec: the CRI request over its image's config, in its
pod's namespaces. The rules are the kubelet's and CRI-O's:

- process: the request's command replaces the image's entrypoint, its args
  the image's cmd; with neither, entrypoint + cmd; the image's env with the
  request's on top (request wins), HOSTNAME of the pod; working dir from
  the request, else the image, else /.
- user: run_as_user (and run_as_group), else run_as_username, else the
  image's User ("name|uid[:group|gid]"), names looked up in the image's
  /etc/passwd and /etc/group; supplemental groups are the request's plus
  the user's groups in /etc/group (Merge, Kubernetes' default), or the
  request's only (Strict).
- namespaces: the pod's network, IPC and UTS, by path (pinned by podrt, or
  its infra's); PID: its own, the pod's (its infra's), the host's (NODE) or
  another container's (TARGET); its own mount namespace.
- capabilities: CRI-O's defaults with the request's adds and drops ("ALL"
  in either), all of the host's for privileged.
- CDI devices (config.CDI_devices and cdi.k8s.io/ annotations): their
  spec's and their own edits, applied last (oci/cdi/edits.py).
- devices: the request's host device nodes (container/devices.py). A
  privileged container may use every device (an allow-all cgroup rule), but
  unlike CRI-O the host's device nodes are not all listed into its /dev.
- sysctls: the pod's (validated at RunPodSandbox), into each container as
  CRI-O does; masked and read-only paths: the request's when it sends any
  (the kubelet sends its defaults), else runc's; none for privileged.
- resources (oci_resources): the request's, with what the host supports;
  oomScoreAdj no lower than podrt's own, as CRI-O clamps it.
- mounts: recursive_read_only is `rro` (validate checks the handler has it);
  rshared and rslave binds need a host mount that propagates
  (podrt/mountinfo.py) and make the rootfs propagate likewise, as in
  containerd. selinux_relabel is accepted and does nothing: podrt applies
  SELinux process labels only and gives containers no mount label to
  relabel with (these hosts have SELinux off).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from podrt.config import Config
from podrt.container import hostfit
from podrt.container.devices import device_nodes
from podrt.container.validate import capability_name
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.host import cgroups, mountinfo
from podrt.host.oom import current_oom_score_adj
from podrt.host.procfs import pid_running
from podrt.host.safeopen import read_in_root
from podrt.model.container import (
    MAX_ID,
    ContainerConfig,
    GroupsPolicy,
    Mount,
    Propagation,
    Resources,
    numeric_id,
)
from podrt.model.sandbox import NsMode
from podrt.oci.cdi import edits as cdi_edits
from podrt.oci.cdi import registry as cdi_registry
from podrt.oci.spec import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    Namespace,
    SpecInput,
    bind,
    build_spec,
    host_capabilities,
    standard_mounts,
)
from podrt.sandbox.infra_spec import pod_file_binds, userns_mappings
from podrt.sandbox.validate import pod_sysctls
from podrt.security import apparmor
from podrt.security.seccomp import profile_for
from podrt.security.selinux import process_label
from podrt.steps.container.context import ContainerContext

NAME_PREFIX = "io.podrt.container."


def process_args(cfg: ContainerConfig, image: dict[str, Any]) -> tuple[str, ...]:
    entrypoint = _strings(image.get("Entrypoint"))
    cmd = _strings(image.get("Cmd"))
    if cfg.command:
        return cfg.command + cfg.args
    return entrypoint + (cfg.args or cmd)


def environment(cfg: ContainerConfig, image: dict[str, Any], hostname: str) -> tuple[str, ...]:
    env: dict[str, str] = {}
    for item in _strings(image.get("Env")):
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    if hostname:
        env["HOSTNAME"] = hostname
    env.update(dict(cfg.envs))
    return tuple(f"{k}={v}" for k, v in env.items())


def resolve_user(cfg: ContainerConfig, image: dict[str, Any], rootfs: Path) -> tuple[int, int, tuple[int, ...]]:
    """(uid, gid, supplemental gids); InvalidArgument for a name the image does not know.
    Strict policy: the image's /etc/group adds no memberships. The supplemental
    gids hold the primary one too, sorted and each once, as containerd and CRI-O
    give runc's additionalGids (and the kernel keeps the groups sorted anyway)."""
    passwd = _table(rootfs, "/etc/passwd")
    groups = _table(rootfs, "/etc/group")
    if cfg.run_as_user is not None:
        uid, name = cfg.run_as_user, next((r[0] for r in passwd if numeric_id(r[2]) == cfg.run_as_user), "")
        gid = cfg.run_as_group if cfg.run_as_group is not None else _primary_gid(passwd, uid)
    else:
        spec = cfg.run_as_username or str(image.get("User") or "")
        user, _, group = spec.partition(":")
        uid, name, gid = _user(user, passwd) if user else (0, "root", 0)
        if cfg.run_as_group is not None:
            gid = cfg.run_as_group
        elif group:
            gid = _group(group, groups)
    extra = list(cfg.supplemental_groups)
    if name and cfg.groups_policy == GroupsPolicy.MERGE:
        extra += [g for row in groups if len(row) > 3 and name in row[3].split(",") and (g := numeric_id(row[2])) is not None]
    return uid, gid, tuple(sorted({gid, *extra}))


def capabilities(cfg: ContainerConfig) -> tuple[str, ...]:
    """Names were checked by validate.check_security."""
    add, drop = ({capability_name(c) for c in caps} for caps in (cfg.add_capabilities, cfg.drop_capabilities))
    have = set() if "CAP_ALL" in drop else set(DEFAULT_CAPABILITIES) - drop
    have |= set(host_capabilities()) if "CAP_ALL" in add else add
    return tuple(c for c in ALL_CAPABILITIES if c in have)


def build_container_spec(ctx: ContainerContext, config: Config) -> dict[str, Any]:
    """Reads the host (devices, mounts, AppArmor): run it in a thread."""
    cfg, pod, image = ctx.config, ctx.sandbox, ctx.image.config.get("config") or {}
    image = image if isinstance(image, dict) else {}
    uid, gid, groups = resolve_user(cfg, image, Path(ctx.rootfs))
    rt = config.runtime
    try:
        seccomp = profile_for(cfg.seccomp, cfg.seccomp_localhost_ref, privileged=cfg.privileged,
                              enabled=rt.seccomp_enabled, default_path=rt.seccomp_profile)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    check_propagation(cfg.mounts)
    shares_host_pid = pod.config.host_pid or cfg.pid_mode == NsMode.NODE
    spec = build_spec(SpecInput(
        rootfs=ctx.rootfs,
        readonly_rootfs=cfg.readonly_rootfs,
        args=process_args(cfg, image),
        env=environment(cfg, image, pod.hostname),
        cwd=cfg.working_dir or str(image.get("WorkingDir") or "") or "/",
        uid=uid, gid=gid, additional_gids=groups,
        privileged=cfg.privileged,
        capabilities=capabilities(cfg),
        no_new_privileges=cfg.no_new_privs,
        terminal=cfg.tty,
        namespaces=_namespaces(ctx),
        mounts=tuple(_mounts(ctx)),
        rootfs_propagation=rootfs_propagation(cfg.mounts),
        cgroups_path=cgroups.sandbox_cgroup(rt.cgroup_manager, pod.cgroup_parent, ctx.id)[1],
        resources=oci_resources(cfg.resources),
        devices=device_nodes(cfg.devices),
        sysctls=pod_sysctls(pod.config, config),
        oom_score_adj=oom_score_adj(cfg.resources.oom_score_adj),
        masked_paths=cfg.masked_paths or None,
        readonly_paths=cfg.readonly_paths or None,
        seccomp=seccomp,
        apparmor_profile=apparmor.process_profile(cfg.apparmor, cfg.apparmor_localhost_ref, container=ctx.id),
        selinux_label=process_label(cfg.selinux, shares_host=shares_host_pid or pod.config.host_ipc),
        annotations={**cfg.annotations, NAME_PREFIX + "name": ctx.name, NAME_PREFIX + "sandbox-id": pod.id},
        **userns_mappings(pod.config),
    ))
    if cfg.cdi_devices:  # after the CRI's own config, which the edits may override (as in CRI-O)
        cdi_edits.apply(spec, cdi_registry.resolve(cfg.cdi_devices, rt.cdi_spec_dirs))
    return spec


def oom_score_adj(wanted: int) -> int:
    """Between podrt's own score and 1000, as CRI-O clamps it: a process
    without CAP_SYS_RESOURCE cannot go lower than its parent."""
    return max(current_oom_score_adj(), min(wanted, 1000))


def _pid_namespace(ctx: ContainerContext) -> Namespace | None:
    """None: the host's. TARGET joins the target's, whose pid the manager put in ctx.target_pid."""
    mode, infra_pid = ctx.config.pid_mode, ctx.sandbox.infra_pid
    if ctx.sandbox.config.host_pid or mode == NsMode.NODE:
        return None
    if mode == NsMode.POD and infra_pid:  # a pod without an infra shares no PID namespace: one of its own
        return Namespace("pid", f"/proc/{infra_pid}/ns/pid")
    if mode == NsMode.TARGET:
        if ctx.target_pid <= 0 or not pid_running(ctx.target_pid):  # it may have exited since the manager looked
            raise FailedPrecondition(f"namespace_options.target_id: container {ctx.config.pid_target_id} is not running")
        return Namespace("pid", f"/proc/{ctx.target_pid}/ns/pid")
    return Namespace("pid")


def _namespaces(ctx: ContainerContext) -> tuple[Namespace, ...]:
    pod, infra = ctx.sandbox.config, f"/proc/{ctx.sandbox.infra_pid}/ns"
    namespaces = [Namespace("user", ctx.sandbox.userns_path)] if ctx.sandbox.userns_path else []  # joined first
    if (pid := _pid_namespace(ctx)) is not None:
        namespaces.append(pid)
    if not pod.host_network:
        namespaces.append(Namespace("network", ctx.sandbox.netns_path or f"{infra}/net"))
        namespaces.append(Namespace("uts", ctx.sandbox.uts_path or f"{infra}/uts"))
    if not pod.host_ipc:
        namespaces.append(Namespace("ipc", ctx.sandbox.ipc_path or f"{infra}/ipc"))
    namespaces.append(Namespace("mount"))
    if cgroups.unified() and not ctx.config.privileged:
        namespaces.append(Namespace("cgroup"))  # as containerd and CRI-O on v2: /sys/fs/cgroup is its own cgroup
    return tuple(namespaces)


def _mounts(ctx: ContainerContext) -> list[dict[str, Any]]:
    pod = ctx.sandbox
    mounts = standard_mounts(own_netns=not pod.config.host_network) + pod_file_binds(
        pod.shm_path, pod.hostname_file, pod.resolv_conf)
    taken = {m["destination"] for m in mounts}
    for n, m in enumerate(ctx.config.mounts):  # the request's replace a default at the same path
        if m.container_path in taken:
            mounts = [x for x in mounts if x["destination"] != m.container_path]
        mounts.append(_image_bind(n, m, ctx.volume_paths[n]) if m.image else _bind(m, ctx.volume_paths.get(n, m.host_path)))
    return mounts


def _bind(m: Mount, source: str) -> dict[str, Any]:
    """`source`: the host path, or its ID-mapped clone (steps/container/idmap.py)."""
    options = ("rbind", _readonly(m, m.readonly), m.propagation.value)
    return bind(source, m.container_path, options)


def _readonly(m: Mount, readonly: bool) -> str:
    """`rro`: runc (1.1+) makes the mount and every mount below it read-only
    (mount_setattr MOUNT_ATTR_RDONLY, AT_RECURSIVE); `ro` leaves submounts as they are."""
    return "rro" if m.recursive_read_only else "ro" if readonly else "rw"


def _image_bind(n: int, m: Mount, merged: str) -> dict[str, Any]:
    """An image volume (mounted by the ImageVolumes step), or a path in it;
    read-only whatever the request says, as images are."""
    source = merged
    if m.image_sub_path:
        source = os.path.realpath(os.path.join(merged, m.image_sub_path))
        if not (source + "/").startswith(merged + "/") or not os.path.exists(source):
            raise InvalidArgument(f"config.mounts[{n}].image_sub_path {m.image_sub_path!r} is not in image {m.image}")
    return bind(source, m.container_path, ("rbind", _readonly(m, True), Propagation.PRIVATE.value))


def check_propagation(mounts: Iterable[Mount], entries: list[mountinfo.MountEntry] | None = None) -> None:
    """FailedPrecondition when an rshared or rslave bind's host mount does not
    propagate (the container would silently see no new mounts)."""
    wanted = [(n, m) for n, m in enumerate(mounts) if m.propagation != Propagation.PRIVATE]
    if not wanted:
        return
    entries = mountinfo.read() if entries is None else entries
    for n, m in wanted:
        problem = mountinfo.propagation_problem(m.host_path, m.propagation.value, entries)
        if problem:
            raise FailedPrecondition(f"config.mounts[{n}] ({m.container_path}) has {m.propagation.value} "
                                     f"propagation, but {problem}")


def rootfs_propagation(mounts: Iterable[Mount]) -> str:
    """The rootfs must propagate as its most propagating bind, or mounts
    would not cross it (containerd's rule)."""
    kinds = {m.propagation for m in mounts}
    if Propagation.BIDIRECTIONAL in kinds:
        return "rshared"
    return "rslave" if Propagation.HOST_TO_CONTAINER in kinds else ""


def oci_resources(r: Resources) -> dict[str, Any]:
    """linux.resources (devices aside), also what `runc update` takes. As in
    containerd: swap only where the host accounts for it, and then no swap
    (memory+swap = memory) unless the request names a swap limit; hugepage
    limits for the page sizes the host has, where it has the hugetlb controller
    (containerd's tolerate_missing_hugetlb_controller); unified as given."""
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {k: v for k, v in (("shares", r.cpu_shares), ("quota", r.cpu_quota), ("period", r.cpu_period)) if v}
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit:
        out["memory"] = {"limit": r.memory_limit}
        if cgroups.swap_accounting():
            out["memory"]["swap"] = r.memory_swap_limit or r.memory_limit
    sizes = hostfit.hugepage_sizes() if cgroups.available("hugetlb") else frozenset()
    if limits := [{"pageSize": h.page_size, "limit": h.limit} for h in r.hugepage_limits if h.page_size in sizes]:
        out["hugepageLimits"] = limits
    if r.unified:  # refused on cgroup v1 by validate.check_host_fit
        out["unified"] = dict(r.unified)
    return out


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _table(rootfs: Path, path: str) -> list[list[str]]:
    """Rows of a passwd/group file as the container sees it: its symlinks
    resolve inside the rootfs, never to the host's files (an empty table when there is none)."""
    try:
        text = read_in_root(str(rootfs), path, 1 << 20).decode(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _number(what: str, text: str) -> int | None:
    """A user or group given as a number (None: a name); refused beyond what runc takes."""
    if not text.isascii() or not text.isdigit():
        return None
    if (value := numeric_id(text)) is None:
        raise InvalidArgument(f"{what} {text[:30]!r} is out of range (0 to {MAX_ID})")
    return value


def _primary_gid(passwd: list[list[str]], uid: int) -> int:
    row = next((r for r in passwd if len(r) > 3 and numeric_id(r[2]) == uid), None)
    return (numeric_id(row[3]) or 0) if row else 0


def _user(user: str, passwd: list[list[str]]) -> tuple[int, str, int]:
    """(uid, name, primary gid) of a name or number."""
    if (uid := _number("user", user)) is not None:
        row = next((r for r in passwd if len(r) > 3 and numeric_id(r[2]) == uid), None)
        return uid, row[0] if row else "", (numeric_id(row[3]) or 0) if row else 0
    row = next((r for r in passwd if len(r) > 3 and r[0] == user), None)
    if row is None or numeric_id(row[2]) is None:
        raise InvalidArgument(f"user {user!r} is not in the image's /etc/passwd")
    return int(row[2]), user, numeric_id(row[3]) or 0


def _group(group: str, groups: list[list[str]]) -> int:
    if (gid := _number("group", group)) is not None:
        return gid
    row = next((r for r in groups if len(r) > 2 and r[0] == group), None)
    if row is None or numeric_id(row[2]) is None:
        raise InvalidArgument(f"group {group!r} is not in the image's /etc/group")
    return int(row[2])
