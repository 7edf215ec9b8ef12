"""The leak audit, written once: the session fixture compares host snapshots
before and after the whole run (anything named podrt), and `audit_daemon_dirs`
checks everything one test daemon's pods can leave."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import attrs

from podrt.cgroups.hierarchy import hierarchies
from tests.support.daemon import DaemonDirs


@attrs.frozen
class HostSnapshot:
    mounts: frozenset[str]
    netns: frozenset[str]
    links: frozenset[str]
    cgroups: frozenset[str]
    processes: frozenset[str]

    def diff(self, later: "HostSnapshot") -> dict[str, list[str]]:
        """What `later` has that this snapshot had not."""
        out = {}
        for field in attrs.fields(HostSnapshot):
            new = sorted(getattr(later, field.name) - getattr(self, field.name))
            if new:
                out[field.name] = new
        return out


def _mounts(marker: str) -> frozenset[str]:
    with open("/proc/self/mounts") as f:
        return frozenset(line.split()[1] for line in f if marker in line.split()[1])


def _netns() -> frozenset[str]:
    found = set()
    for d in (Path("/run/netns"), Path("/var/run/netns")):
        if d.is_dir():
            found.update(str(d / n) for n in os.listdir(d))
    return frozenset(found)


def _links() -> frozenset[str]:
    return frozenset(os.listdir("/sys/class/net"))


def _cgroups(marker: str) -> frozenset[str]:
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


def _processes(names: tuple[str, ...]) -> frozenset[str]:
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if comm in names and state != "Z":  # zombies are dead; init reaps them late here
            found.add(f"{pid}:{comm}")
    return frozenset(found)


def snapshot(marker: str = "podrt") -> HostSnapshot:
    return HostSnapshot(
        mounts=_mounts(marker),
        netns=_netns(),
        links=_links(),
        cgroups=_cgroups(marker),
        processes=_processes(("conmon", "runc", "catatonit")),
    )


def audit_daemon_dirs(d: DaemonDirs) -> dict[str, list[str]]:
    """What a daemon's pods and containers may leave: mounts (rootfs overlays
    included), netns pins, IP leases, runc state, sandbox and container dirs
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
    for label, directory in (("netns", d.runroot / "netns"), ("runc state", d.runroot / "runc"),
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
    cgroups = [str(p) for h in hierarchies() for p in h.glob("podrt/podrt-*")]
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
