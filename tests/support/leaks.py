"""The leak audit, written once: the session fixture compares host snapshots
before and after the whole run, and `audit_daemon_dirs` checks everything one
test daemon's pods can leave.

Only podrt's own resources count, so the suite passes on a node where another
runtime (containerd, CRI-O) makes and drops netns, veths and conmon/runc
processes of its own meanwhile: what lies in podrt's places (its default dirs,
the tests' temporary bases), what is named for podrt (cgroups, bridges, netns),
the veths on podrt's bridges, and processes that name a podrt place or run in
a podrt cgroup."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import subprocess
import tempfile
from pathlib import Path

import attrs

from podrt.host import mountinfo
from podrt.host.cgroups.hierarchy import hierarchies
from tests.support.daemon import DaemonDirs

MARKER = "podrt"  # in the names podrt gives: cgroups podrt-<id>, bridges podrt0/podrttest0, dirs


def podrt_places() -> tuple[str, ...]:
    """Path prefixes of what podrt and its tests make: the daemon's default dirs,
    every test's or benchmark's temporary base (mkdtemp prefix "podrt-"), and
    pytest's tmp_path root (some tests run a daemon there)."""
    tmp = tempfile.gettempdir()
    return ("/run/podrt/", "/var/lib/podrt/", os.path.join(tmp, MARKER + "-"),
            os.path.join(tmp, f"pytest-of-{getpass.getuser()}") + "/")


@attrs.frozen
class HostSnapshot:
    mounts: frozenset[str]
    netns: frozenset[str]
    links: frozenset[str]
    cgroups: frozenset[str]
    processes: frozenset[str]

    def diff(self, later: HostSnapshot) -> dict[str, list[str]]:
        """What `later` has that this snapshot had not."""
        out = {}
        for field in attrs.fields(HostSnapshot):
            new = sorted(getattr(later, field.name) - getattr(self, field.name))
            if new:
                out[field.name] = new
        return out


def _podrts(path: str, places: tuple[str, ...]) -> bool:
    return MARKER in path or path.startswith(places)


def _mounts(mounts: list[mountinfo.MountEntry], places: tuple[str, ...]) -> frozenset[str]:
    return frozenset(m.mount_point for m in mounts if _podrts(m.mount_point, places))


def _netns(mounts: list[mountinfo.MountEntry], places: tuple[str, ...]) -> frozenset[str]:
    """podrt's namespace pins: nsfs mounts in its places (netns and user
    namespaces), files in its default netns and userns dirs, and podrt-named
    ones in the admin's /run/netns (containerd's cni-<uuid> there are not podrt's)."""
    found = {m.mount_point for m in mounts if m.fstype == "nsfs" and _podrts(m.mount_point, places)}
    for d, ours in ((Path("/run/podrt/netns"), ""), (Path("/run/podrt/userns"), ""), (Path("/run/podrt/ipcns"), ""),
                    (Path("/run/podrt/utsns"), ""), (Path("/run/netns"), MARKER),
                    (Path("/var/run/netns"), MARKER)):
        with contextlib.suppress(OSError):
            found.update(str(d / n) for n in os.listdir(d) if n.startswith(ours))
    return frozenset(found)


def _links() -> frozenset[str]:
    """podrt's bridges (the tests' podrttest0, podrtcni0; `podrt install-network`'s
    podrt0) and the veths on them; CNI names a veth at random, its bridge says whose it is."""
    found = set()
    for name in os.listdir("/sys/class/net"):
        try:
            master = os.path.basename(os.readlink(f"/sys/class/net/{name}/master"))
        except OSError:  # no master, or the link went meanwhile
            master = ""
        if MARKER in name or MARKER in master:
            found.add(name)
    return frozenset(found)


def _cgroups(marker: str = MARKER) -> frozenset[str]:
    """Every cgroup named for podrt in every hierarchy (v1's controllers, or the v2 tree)."""
    found = set()
    for top in hierarchies():
        for dirpath, dirnames, _ in os.walk(top):
            for name in dirnames:
                if marker in name:
                    found.add(os.path.join(dirpath, name))
            if dirpath.count("/") > 7:
                dirnames[:] = []
    return frozenset(found)


def _in_podrt_cgroup(pid: str) -> bool:
    """In a pod's or container's cgroup (cgroupfs podrt-<id>, systemd podrt-<id>.scope)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return any(part.startswith(MARKER) for line in lines for part in line.split(":", 2)[-1].split("/"))


def _processes(places: tuple[str, ...]) -> frozenset[str]:
    """Live processes of podrt's: test daemons, conmon and runc (their command
    lines name a place: config, bundle, --root), and what runs in pods (catatonit,
    container processes: in podrt's cgroups)."""
    found = set()
    encoded = tuple(p.encode() for p in places)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # zombies are dead; init reaps them late here
                continue
            if any(p in cmdline for p in encoded) or _in_podrt_cgroup(pid):
                found.add(f"{pid}:{stat[stat.index('(') + 1:stat.rindex(')')]}")
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return frozenset(found)


def snapshot(places: tuple[str, ...] | None = None) -> HostSnapshot:
    """podrt's resources on this host now (see the module's docstring)."""
    places = podrt_places() if places is None else places
    mounts = mountinfo.read()
    return HostSnapshot(
        mounts=_mounts(mounts, places),
        netns=_netns(mounts, places),
        links=_links(),
        cgroups=_cgroups(),
        processes=_processes(places),
    )


def _daemon_ids(d: DaemonDirs) -> set[str] | None:
    """The IDs of the pods and containers a test daemon made: each creation is a
    transaction its log names ("tx RunPodSandbox <id>: ...", "replayed ... tx <id>"); None without a log.
    Other daemons' pods (other tests, other sessions) share podrt's default cgroup parent."""
    try:
        text = (d.base / "daemon.log").read_bytes()
    except FileNotFoundError:
        return None
    return {m.decode() for m in re.findall(rb"\btx (?:[A-Za-z]+ )?([0-9a-f]{64})\b", text)}


def audit_daemon_dirs(d: DaemonDirs) -> dict[str, list[str]]:
    """What a daemon's pods and containers may leave: mounts (rootfs overlays,
    ID-mapped clones and namespace pins included), netns, user, IPC and UTS namespace pins, IP leases, runc state, sandbox and container dirs
    (writable uppers in them), conmon processes, cgroups. Empty when all pods
    are removed."""
    found: dict[str, list[str]] = {}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if str(d.base) in line.split()[4]]
    if mounts:
        found["mounts"] = mounts
    leases = [p.name for p in (d.base / "ipam").rglob("*") if p.is_file() and p.name[0].isdigit()] if (d.base / "ipam").exists() else []
    if leases:
        found["ip leases"] = leases
    for label, directory in (("netns", d.runroot / "netns"), ("user namespace pins", d.runroot / "userns"),
                             ("IPC namespace pins", d.runroot / "ipcns"), ("UTS namespace pins", d.runroot / "utsns"),
                             ("ID-mapped mounts", d.runroot / "idmap"), ("runc state", d.runroot / "runc"),
                             ("sandbox dirs", d.root / "sandboxes"), ("run dirs", d.runroot / "sandboxes"),
                             ("container dirs", d.root / "containers"),
                             ("container run dirs", d.runroot / "containers"),
                             ("container exit files", d.runroot / "exits"),
                             ("journal", d.root / "journal"), ("cni cache", d.root / "cni-cache"),
                             ("pod log dirs", d.base / "logs")):
        if directory.exists() and any(directory.iterdir()):
            found[label] = [p.name for p in directory.iterdir()]
    images = d.root / "images"
    half_made = [p.name for p in (images / "ingest").glob("*")] + [p.name for p in (images / "layers").glob(".tmp-*")]
    if half_made:
        found["image store: partial downloads or layers"] = half_made
    conmons = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"conmon" in cmdline.split(b"\0")[0] and str(d.base).encode() in cmdline:
                conmons.append(pid)
    if conmons:
        found["conmon processes"] = conmons
    ids = _daemon_ids(d)
    cgroups = [str(p) for h in hierarchies() for p in h.glob("podrt/podrt-*")
               if ids is None or p.name.rsplit("-", 1)[-1] in ids]
    if cgroups:
        found["cgroups"] = cgroups
    return found


def scrub_daemon_dirs(d: DaemonDirs) -> None:
    """Safety net after a failed test, before its dirs go: force away its pods'
    containers, mounts and cgroups so one failure does not poison later tests.
    (The failing test has already reported the leak.)"""
    runc_root = d.runroot / "runc"
    ids = [p.name for p in runc_root.iterdir()] if runc_root.is_dir() else []
    for cid in ids:
        subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid], capture_output=True)
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f if line.split()[4].startswith(str(d.base))]
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    owners = [p for kind in ("sandboxes", "containers") if (d.root / kind).is_dir() for p in (d.root / kind).iterdir()]
    for owner in owners:
        for cg in (cg for h in hierarchies() for cg in h.glob(f"*/podrt*-{owner.name}")):
            with contextlib.suppress(OSError):
                cg.rmdir()
    for h in hierarchies():  # podrt's default parent, removed when empty
        with contextlib.suppress(OSError):
            (h / "podrt").rmdir()
