"""`podrt check`: is this host able to run pods? Says what is missing and how to fix it.

Each check does the real thing where it is cheap (mount an overlay and a tmpfs,
enter a new network namespace) rather than guessing from files.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from podrt.config import Config, ConfigError
from podrt.host import cgroups, mountinfo, proc
from podrt.host.idmap import IdmapSupport
from podrt.host.oom import can_set
from podrt.images import registries
from podrt.images.pause import is_builtin
from podrt.network import default as default_network
from podrt.network.cni import find_plugin
from podrt.network.cniconf import find_network
from podrt.oci import criu

APT_HINT = "apt-get install -y runc conmon containernetworking-plugins catatonit iproute2 iptables"
BASE_CNI_PLUGINS = ("bridge", "host-local", "portmap")  # no loopback: podrt brings lo up itself


@attrs.frozen
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _executable(name: str, path: Path, fix: str) -> CheckResult:
    ok = path.is_file() and os.access(path, os.X_OK)
    return CheckResult(name, ok, str(path) if ok else f"{path} not found or not executable", "" if ok else fix)


def required_binaries(cfg: Config) -> list[CheckResult]:
    """Also checked by the daemon at start: without these no pod can run."""
    results = [
        _executable(f"runtime {name}", Path(handler.runtime_path), f"{APT_HINT} (or set runtime_path of [podrt.runtime.runtimes.{name}])")
        for name, handler in cfg.runtime.runtimes.items()
    ]
    results.append(_executable("conmon", Path(cfg.runtime.conmon), "apt-get install -y conmon"))
    if is_builtin(cfg.image.pause_image):  # else the pause image brings its own init
        results.append(_executable("catatonit", Path(cfg.image.catatonit_path), "apt-get install -y catatonit"))
    return results


def _cni(cfg: Config) -> list[CheckResult]:
    lookup = find_network(Path(cfg.network.network_dir))
    wanted = lookup.network.plugin_types if lookup.network else list(BASE_CNI_PLUGINS)
    results = [
        CheckResult(
            "CNI network config",
            lookup.network is not None,
            f"{lookup.network.name} from {lookup.network.path}" if lookup.network else lookup.message,
            "" if lookup.network else f"write a .conflist into {cfg.network.network_dir} (pods with host network work without it)",
            required=False,
        )
    ]
    own = default_network.check(Path(cfg.network.network_dir))
    if own is not None:
        ok, detail = own
        results.append(CheckResult("default pod network subnet", ok, detail,
                                   "" if ok else f"edit the subnet in {cfg.network.network_dir}/{default_network.FILE_NAME}"))
    for plugin in wanted:
        found = find_plugin(cfg.network.plugin_dirs, plugin)
        dirs = ":".join(cfg.network.plugin_dirs)
        results.append(
            CheckResult(
                f"CNI plugin {plugin}",
                found is not None,
                found or f"not in {dirs}",
                "" if found else "apt-get install -y containernetworking-plugins",
            )
        )
    return results


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        code, out, err = proc.run_sync(argv, timeout=10)
    except OSError as exc:  # TimeoutError included
        return False, str(exc)
    return code == 0, (err or out).strip()


def _mount_check(name: str, fstype: str, make_opts: Callable[[Path], str], fix: str,
                 where: Path | None = None) -> CheckResult:
    """Mount for real in a temp dir (under `where`: that filesystem is the one tested)."""
    with tempfile.TemporaryDirectory(prefix="podrt-check-", dir=where) as tmp:
        base = Path(tmp)
        target = base / "mnt"
        target.mkdir()
        ok, err = _run(["mount", "-t", fstype, "-o", make_opts(base), fstype, str(target)])
        if ok:
            _run(["umount", str(target)])
    return CheckResult(name, ok, "mountable" if ok else err, "" if ok else fix)


def _overlay_opts(base: Path) -> str:
    for sub in ("lower", "upper", "work"):
        (base / sub).mkdir()
    return f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work"


NEEDED_CONTROLLERS = ("cpu", "memory", "pids")
OPTIONAL_CONTROLLERS = ("cpuset", "io", "hugetlb")  # cpuset_*, blkio-style and hugepage limits


def cgroup_checks(cfg: Config, root: Path = cgroups.CGROUP_ROOT) -> list[CheckResult]:
    """The hierarchy, and the controllers pods' cgroups can have: v1 mounts them
    one by one. On v2 runc enables them down the path (cgroup.subtree_control of
    each level), which it can do for what the cgroup above podrt's default pod
    parent offers (its cgroup.controllers): that is the limit checked."""
    mode = cgroups.hierarchy.detect(root)
    notes = {cgroups.Hierarchy.HYBRID: "v1 with an empty v2 tree at unified/: limits and stats are v1's",
             cgroups.Hierarchy.UNIFIED: "v2, the unified hierarchy"}
    hierarchy = CheckResult("cgroup hierarchy", True, notes.get(mode, "v1"), required=False)
    if mode is not cgroups.Hierarchy.UNIFIED:
        wanted = NEEDED_CONTROLLERS + tuple("blkio" if c == "io" else c for c in OPTIONAL_CONTROLLERS)
        present = [c for c in wanted if cgroups.available(c, root)]
        missing = sorted(set(NEEDED_CONTROLLERS) - set(present))
        return [hierarchy, CheckResult(
            "cgroup controllers", not missing,
            f"mounted: {', '.join(present)}" if not missing else f"v1 controllers missing: {', '.join(missing)}",
            "" if not missing else f"mount the cgroup controllers ({', '.join(missing)}) under /sys/fs/cgroup")]
    manager = cfg.runtime.cgroup_manager
    pods_parent = cgroups.parent_dir(cgroups.DEFAULT_SYSTEMD_PARENT if manager == "systemd" else cgroups.DEFAULT_CGROUPFS_PARENT)
    above = posixpath.dirname(pods_parent)
    offered = cgroups.hierarchy.offered_to(above, root)
    enabled = cgroups.hierarchy.enabled_below(above, root)
    missing = [c for c in NEEDED_CONTROLLERS if c not in offered]
    absent = [c for c in OPTIONAL_CONTROLLERS if c not in offered]
    where = root / above.strip("/")
    detail = (f"{where} offers {' '.join(sorted(offered)) or 'none'} to pods' cgroups ({pods_parent}), "
              f"enables {' '.join(sorted(enabled)) or 'none'}")
    if absent:
        detail += f"; without {', '.join(absent)}, limits of that kind are not applied"
    fix = (f"{where / 'cgroup.controllers'} must list {', '.join(missing)}: have the cgroup above it enable them "
           f"(echo '{' '.join('+' + c for c in missing)}' > <that cgroup>/cgroup.subtree_control; under systemd, "
           f"Delegate=yes), and boot without cgroup_disable= for them")
    return [hierarchy, CheckResult("cgroup controllers", not missing, detail if not missing else f"{detail}; missing {', '.join(missing)}",
                                   "" if not missing else fix)]


def _netns() -> CheckResult:
    unshare = shutil.which("unshare")
    if unshare is None:
        return CheckResult("network namespaces", False, "unshare not found", "apt-get install -y util-linux")
    ok, err = _run([unshare, "--net", "true"])
    return CheckResult("network namespaces", ok, "can create" if ok else err, "" if ok else "run as root on a kernel with CONFIG_NET_NS")


def _user_namespaces(cfg: Config) -> CheckResult:
    """Pods with a user namespace of their own need ID-mapped mounts in podrt's root: the daemon's own try."""
    with ThreadPoolExecutor(1) as pool:  # its own loop, wherever this is called from
        problem = pool.submit(asyncio.run, IdmapSupport(Path(cfg.root)).problem()).result()
    if problem is None:
        return CheckResult("user namespaces", True, f"pods may have their own: ID-mapped mounts work in {cfg.root}")
    return CheckResult("user namespaces", False, f"pods with their own are refused: ID-mapped mounts fail: {problem}",
                       f"Linux >= 5.19, {cfg.root} on ext4, xfs or btrfs (tmpfs from 6.3), searchable by others",
                       required=False)


def _checkpoint() -> CheckResult:
    """CheckpointContainer works where `criu check` passes: the daemon's own probe."""
    with ThreadPoolExecutor(1) as pool:
        problem = pool.submit(asyncio.run, criu.probe()).result()
    if problem is None:
        return CheckResult("container checkpoints", True, f"criu check passes ({criu.criu_path()}): CheckpointContainer works")
    fix = criu.INSTALL_HINT if criu.criu_path() is None else "a kernel this criu supports (`criu check` must pass)"
    return CheckResult("container checkpoints", False, f"CheckpointContainer is refused: {problem}", fix, required=False)


def _oom_score_adj() -> CheckResult:
    """Negative OOM scores need CAP_SYS_RESOURCE; without it podrt clamps them."""
    ok = can_set(-998)
    return CheckResult(
        "negative oom_score_adj",
        ok,
        "allowed" if ok else "not allowed (no CAP_SYS_RESOURCE): infra OOM score will be clamped",
        required=False,
    )


def _lower_opts(base: Path) -> str:
    for sub in ("a", "b"):
        (base / sub).mkdir()
    return f"lowerdir={base}/a:{base}/b"  # a read-only overlay: lowers alone


def _image_store(cfg: Config) -> CheckResult:
    """Layers are overlay lower dirs on the store's own filesystem: mount two there."""
    images = Path(cfg.root) / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return CheckResult("image store", False, f"cannot create {images}: {exc.strerror}", f"make {cfg.root} writable")
    result = _mount_check("image store", "overlay", _lower_opts, f"put {cfg.root} on a filesystem overlayfs accepts (ext4, xfs)",
                          where=images)
    used = shutil.disk_usage(images)
    detail = f"{images}: overlay layers mountable, {used.free / 2**30:.1f} GiB free" if result.ok else f"{images}: {result.detail}"
    return attrs.evolve(result, detail=detail)


def _container_storage(cfg: Config) -> CheckResult:
    """Each container's writable layer is an overlay upper dir under the root:
    some filesystems cannot hold one (overlayfs itself, NFS), and then every
    CreateContainer would fail."""
    containers = Path(cfg.root) / "containers"
    try:
        containers.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return CheckResult("container storage", False, f"cannot create {containers}: {exc.strerror}", f"make {cfg.root} writable")
    fstype = mountinfo.fstype_of(str(containers))
    result = _mount_check("container storage", "overlay", _overlay_opts,
                          f"put {cfg.root} on ext4, xfs, btrfs or tmpfs (set podrt.root; here it is on {fstype})",
                          where=containers)
    detail = (f"{containers} ({fstype}): holds overlay upper dirs" if result.ok
              else f"{containers} is on {fstype}, which cannot hold an overlay upper dir: no container can be created ({result.detail})")
    return attrs.evolve(result, detail=detail)


def _registries(cfg: Config) -> CheckResult:
    path = Path(cfg.image.registries_conf)
    try:
        conf = registries.load(path)
    except ConfigError as exc:
        return CheckResult("registries.conf", False, str(exc), f"fix {path} (containers-registries.conf(5) v2)")
    read = ", ".join(str(f) for f in conf.files) or f"none ({path} absent: every pull goes to the named registry)"
    return CheckResult("registries.conf", True, f"{read}; {len(conf.registries)} registry entries", required=False)


def run_checks(cfg: Config) -> list[CheckResult]:
    results = required_binaries(cfg) + _cni(cfg)
    if os.geteuid() != 0:
        results.append(CheckResult("root", False, "podrt must run as root", "run podrt as root"))
        return results
    results.append(_mount_check("overlayfs", "overlay", _overlay_opts, "a kernel with overlayfs (modprobe overlay)"))
    results.append(_mount_check("tmpfs", "tmpfs", lambda _base: "size=1m", "a kernel with tmpfs"))
    results.append(_image_store(cfg))
    results.append(_container_storage(cfg))
    results.append(_registries(cfg))
    results.extend(cgroup_checks(cfg))
    results.append(_netns())
    results.append(_user_namespaces(cfg))
    results.append(_oom_score_adj())
    results.append(_checkpoint())
    return results


def format_results(results: list[CheckResult]) -> tuple[str, bool]:
    """Human-readable report, and whether every required check passed."""
    lines = []
    for r in results:
        mark = "ok  " if r.ok else ("FAIL" if r.required else "warn")
        lines.append(f"[{mark}] {r.name}: {r.detail}")
        if not r.ok and r.fix:
            lines.append(f"       fix: {r.fix}")
    healthy = all(r.ok for r in results if r.required)
    lines.append("host is ready for podrt" if healthy else "host is NOT ready for podrt")
    return "\n".join(lines), healthy
