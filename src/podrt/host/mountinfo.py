"""Which host mount a path is on and how that mount propagates, from
/proc/self/mountinfo (proc(5)). A container's rshared or rslave bind only
works when the host side propagates: the same checks as CRI-O and containerd
make before creating the container."""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")  # the kernel writes space, tab, newline and backslash as \ooo


@attrs.frozen
class MountEntry:
    mount_point: str
    optional: tuple[str, ...] = ()  # "shared:N", "master:N", "propagate_from:N", "unbindable"
    fstype: str = ""

    @property
    def shared(self) -> bool:
        return any(o.startswith("shared:") for o in self.optional)

    @property
    def slave(self) -> bool:
        return any(o.startswith("master:") for o in self.optional)


def parse(text: str) -> list[MountEntry]:
    """Entries in file order (a later one over the same mount point is on top); malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        entries.append(MountEntry(_unescape(fields[4]), tuple(fields[6:sep]), fields[sep + 1]))
    return entries


def read() -> list[MountEntry]:
    return parse(MOUNTINFO.read_text())


def mount_of(path: str, entries: list[MountEntry]) -> MountEntry | None:
    """The mount `path` (already a real path) is on: the longest mount point
    containing it, the topmost of those stacked on one point."""
    best: MountEntry | None = None
    for entry in entries:
        point = entry.mount_point
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = entry
    return best


def fstype_of(path: str) -> str:
    """The filesystem type `path` is on ("" when no mount holds it)."""
    entry = mount_of(os.path.realpath(path), read())
    return entry.fstype if entry else ""


def propagation_problem(host_path: str, want: str, entries: list[MountEntry]) -> str | None:
    """Why `host_path` cannot be bound with `want` ("rshared" or "rslave")
    propagation, or None: rshared needs a shared host mount, rslave a shared or slave one."""
    entry = mount_of(os.path.realpath(host_path), entries)
    if entry is None:
        return f"{host_path} is on no mount in {MOUNTINFO}"
    if want == "rshared" and not entry.shared:
        return f"{host_path} is on mount {entry.mount_point}, which is not a shared mount"
    if want == "rslave" and not (entry.shared or entry.slave):
        return f"{host_path} is on mount {entry.mount_point}, which is neither a shared nor a slave mount"
    return None


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)
