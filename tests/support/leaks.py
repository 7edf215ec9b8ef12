"""The leak audit: host resources that podrt tests may create, before vs after.

Written once; the session fixture and any test that wants a stricter check use
it. A resource counts if its name or path says podrt, or it is under a test's
own base dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs


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
    found = set()
    root = Path("/sys/fs/cgroup")
    for controller in root.iterdir() if root.is_dir() else []:
        for dirpath, dirnames, _ in os.walk(controller):
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
