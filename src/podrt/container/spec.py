"""A container's OCI spec: the CRI request over its image's config, in its
pod's namespaces. The rules are the kubelet's and CRI-O's:

- process: the request's command replaces the image's entrypoint, its args
  the image's cmd; with neither, entrypoint + cmd; the image's env with the
  request's on top (request wins), HOSTNAME of the pod; working dir from
  the request, else the image, else /.
- user: run_as_user (and run_as_group), else run_as_username, else the
  image's User ("name|uid[:group|gid]"), names looked up in the image's
  /etc/passwd and /etc/group; supplemental groups are the request's plus
  the user's groups in /etc/group (Merge, Kubernetes' default).
- namespaces: the pod's network, IPC and UTS (the infra's, by path), its
  own PID namespace unless it shares the pod's, its own mount namespace.
- capabilities: CRI-O's defaults with the request's adds and drops ("ALL"
  in either), all of the host's for privileged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from podrt import cgroups
from podrt.config import Config
from podrt.container.context import ContainerContext
from podrt.container.model import ContainerConfig, Mount, Resources
from podrt.errors import InvalidArgument
from podrt.oci.seccomp import profile_for
from podrt.oci.spec import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DEFAULT_PATH, Namespace, SpecInput, bind, build_spec, host_capabilities, standard_mounts
from podrt.sandbox.infra_spec import pod_file_binds
from podrt.sandbox.model import NsMode
from podrt.selinux import process_label

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
    """(uid, gid, supplemental gids); InvalidArgument for a name the image does not know."""
    passwd = _table(rootfs / "etc" / "passwd")
    groups = _table(rootfs / "etc" / "group")
    if cfg.run_as_user is not None:
        uid, name = cfg.run_as_user, next((r[0] for r in passwd if _int(r[2]) == cfg.run_as_user), "")
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
    if name:
        extra += [g for row in groups if len(row) > 3 and name in row[3].split(",") and (g := _int(row[2])) is not None]
    return uid, gid, tuple(dict.fromkeys(g for g in extra if g != gid))


def capabilities(cfg: ContainerConfig) -> tuple[str, ...]:
    def norm(caps: Iterable[str]) -> set[str]:
        return {c.upper() if c.upper().startswith("CAP_") else f"CAP_{c.upper()}" for c in caps}

    add, drop = norm(cfg.add_capabilities), norm(cfg.drop_capabilities)
    have = set() if "CAP_ALL" in drop else set(DEFAULT_CAPABILITIES) - drop
    have |= set(host_capabilities()) if "CAP_ALL" in add else add
    unknown = have - set(ALL_CAPABILITIES)
    if unknown:
        raise InvalidArgument(f"unknown capabilities: {', '.join(sorted(unknown))}")
    return tuple(c for c in ALL_CAPABILITIES if c in have)


def build_container_spec(ctx: ContainerContext, config: Config) -> dict[str, Any]:
    cfg, pod, image = ctx.config, ctx.sandbox, ctx.image.config.get("config") or {}
    image = image if isinstance(image, dict) else {}
    uid, gid, groups = resolve_user(cfg, image, Path(ctx.rootfs))
    rt = config.runtime
    try:
        seccomp = profile_for(cfg.seccomp, cfg.seccomp_localhost_ref, privileged=cfg.privileged,
                              enabled=rt.seccomp_enabled, default_path=rt.seccomp_profile)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return build_spec(SpecInput(
        rootfs=ctx.rootfs,
        readonly_rootfs=cfg.readonly_rootfs,
        args=process_args(cfg, image),
        env=environment(cfg, image, pod.hostname),
        cwd=cfg.working_dir or str(image.get("WorkingDir") or "") or "/",
        uid=uid, gid=gid, additional_gids=groups,
        privileged=cfg.privileged,
        capabilities=capabilities(cfg),
        no_new_privileges=cfg.no_new_privs,
        namespaces=_namespaces(ctx),
        mounts=tuple(_mounts(ctx)),
        cgroups_path=cgroups.sandbox_cgroup(rt.cgroup_manager, pod.cgroup_parent, ctx.id)[1],
        resources=oci_resources(cfg.resources),
        seccomp=seccomp,
        selinux_label=process_label(cfg.selinux, shares_host=pod.config.host_pid or pod.config.host_ipc),
        annotations={**cfg.annotations, NAME_PREFIX + "name": ctx.name, NAME_PREFIX + "sandbox-id": pod.id},
    ))


def _namespaces(ctx: ContainerContext) -> tuple[Namespace, ...]:
    pod, infra = ctx.sandbox.config, f"/proc/{ctx.sandbox.infra_pid}/ns"
    namespaces = []
    if not pod.host_pid:
        namespaces.append(Namespace("pid", f"{infra}/pid" if ctx.config.pid_mode == NsMode.POD else ""))
    if not pod.host_network:
        namespaces.append(Namespace("network", ctx.sandbox.netns_path or f"{infra}/net"))
        namespaces.append(Namespace("uts", f"{infra}/uts"))
    if not pod.host_ipc:
        namespaces.append(Namespace("ipc", f"{infra}/ipc"))
    namespaces.append(Namespace("mount"))
    return tuple(namespaces)


def _mounts(ctx: ContainerContext) -> list[dict[str, Any]]:
    pod = ctx.sandbox
    mounts = standard_mounts(own_netns=not pod.config.host_network) + pod_file_binds(
        pod.shm_path, pod.hostname_file, pod.resolv_conf)
    taken = {m["destination"] for m in mounts}
    for m in ctx.config.mounts:  # the request's replace a default at the same path
        if m.container_path in taken:
            mounts = [x for x in mounts if x["destination"] != m.container_path]
        mounts.append(_bind(m))
    return mounts


def _bind(m: Mount) -> dict[str, Any]:
    options = ("rbind", "ro" if m.readonly else "rw", m.propagation.value)
    return bind(m.host_path, m.container_path, options)


def oci_resources(r: Resources) -> dict[str, Any]:
    """linux.resources (devices aside), also what `runc update` takes."""
    out: dict[str, Any] = {}
    cpu = {k: v for k, v in (("shares", r.cpu_shares), ("quota", r.cpu_quota), ("period", r.cpu_period)) if v}
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit:
        out["memory"] = {"limit": r.memory_limit}
    return out


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _table(path: Path) -> list[list[str]]:
    """Rows of a passwd/group file in the rootfs; read without following a
    symlink out of it (the image's own file, or nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "r", errors="replace") as f:
        return [line.rstrip("\n").split(":") for line in f.read(1 << 20).splitlines() if line and not line.startswith("#")]


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _primary_gid(passwd: list[list[str]], uid: int) -> int:
    row = next((r for r in passwd if len(r) > 3 and _int(r[2]) == uid), None)
    return (_int(row[3]) or 0) if row else 0


def _user(user: str, passwd: list[list[str]]) -> tuple[int, str, int]:
    """(uid, name, primary gid) of a name or number."""
    if user.isdigit():
        uid = int(user)
        row = next((r for r in passwd if len(r) > 3 and _int(r[2]) == uid), None)
        return uid, row[0] if row else "", (_int(row[3]) or 0) if row else 0
    row = next((r for r in passwd if len(r) > 3 and r[0] == user), None)
    if row is None or _int(row[2]) is None:
        raise InvalidArgument(f"user {user!r} is not in the image's /etc/passwd")
    return int(row[2]), user, _int(row[3]) or 0


def _group(group: str, groups: list[list[str]]) -> int:
    if group.isdigit():
        return int(group)
    row = next((r for r in groups if len(r) > 2 and r[0] == group), None)
    if row is None or _int(row[2]) is None:
        raise InvalidArgument(f"group {group!r} is not in the image's /etc/group")
    return int(row[2])
