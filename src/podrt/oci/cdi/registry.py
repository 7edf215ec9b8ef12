"""The CDI spec dirs as one catalog of devices, read again at each use.

Files are those ending in .json or .yaml directly in each dir, by name. A
device defined in a later dir replaces the one of an earlier dir (CDI's
priority: /var/run/cdi over /etc/cdi); two files of the same dir that
define one device make it unusable until one goes (CDI's conflict rule). A
file that cannot be read or is refused (specfile.SpecError) is logged, left
out, and named when a device it might define is asked for: it never hides
the devices of other files.

A scan reads every spec file, and parses again only a file whose bytes
changed since the last scan: a spec written a moment before a
CreateContainer is always seen (no timestamp granularity, no watch to
race), for a read of a few small files. It blocks: call it in a thread."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Mapping, Sequence

import attrs

from podrt.errors import InvalidArgument
from podrt.oci.cdi.specfile import Edits, SpecError, SpecFile, parse

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".yaml")
_Entry = tuple[int, str, "SpecFile | SpecError"]  # (dir priority, path, the spec or why it is refused)
MAX_SPEC_BYTES = 8 << 20  # a larger file is refused, not read whole


@attrs.frozen
class Catalog:
    devices: Mapping[str, SpecFile]  # qualified name -> the spec that defines it
    conflicts: Mapping[str, tuple[str, ...]]  # qualified name -> the files of one dir that all define it
    refused: Mapping[str, str]  # path -> why it is left out


class SpecCache:
    """The spec files as last read: path -> (bytes, the spec or why it was refused)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one scan at a time: creations in threads share the cache
        self._files: dict[str, tuple[bytes | None, SpecFile | SpecError]] = {}
        self._last: tuple[list[_Entry], Catalog] | None = None  # the last catalog and the files it was made of

    def catalog(self, dirs: Sequence[str]) -> Catalog:
        with self._lock:
            seen = {(priority, path): self._load(path) for priority, directory in enumerate(dirs)
                    for path in _spec_paths(directory)}
            self._files = {path: entry for (_prio, path), entry in seen.items()}  # files gone, or of other dirs, are forgotten
            made_of = [(priority, path, result) for (priority, path), (_data, result) in seen.items()]
            last = self._last
            if last is None or len(made_of) != len(last[0]) or any(
                    a[:2] != b[:2] or a[2] is not b[2] for a, b in zip(made_of, last[0])):
                last = self._last = made_of, _catalog(made_of)  # a file changed: the catalog is made again
            return last[1]

    def _load(self, path: str) -> tuple[bytes | None, SpecFile | SpecError]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO named *.yaml must not block
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SPEC_BYTES:
                    return self._refuse(path, None, SpecError(f"not a regular file of at most {MAX_SPEC_BYTES} bytes"))
                data = f.read()
        except OSError as exc:
            return self._refuse(path, None, SpecError(f"cannot read: {exc.strerror or exc}"))
        cached = self._files.get(path)
        if cached is not None and cached[0] == data:
            return cached
        try:
            return data, parse(path, data)
        except SpecError as exc:
            return self._refuse(path, data, exc)

    def _refuse(self, path: str, data: bytes | None, error: SpecError) -> tuple[bytes | None, SpecFile | SpecError]:
        """Logged once per content (None: not read): a bad file is not logged again at every creation."""
        cached = self._files.get(path)
        if cached is not None and cached[0] == data and str(cached[1]) == str(error):
            return cached
        log.warning("CDI spec %s is refused: %s", path, error)
        return data, error


def _spec_paths(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return sorted(e.path for e in entries if e.name.endswith(SUFFIXES) and not e.is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("CDI spec dir %s cannot be read: %s", directory, exc.strerror or exc)
        return []


def _catalog(made_of: list[_Entry]) -> Catalog:
    devices: dict[str, tuple[int, SpecFile]] = {}
    conflicts: dict[str, list[str]] = {}
    for priority, _path, result in made_of:
        if isinstance(result, SpecFile):
            _add(result, priority, devices, conflicts)
    return Catalog(
        devices={name: spec for name, (_prio, spec) in devices.items() if name not in conflicts},
        conflicts={name: tuple(paths) for name, paths in conflicts.items()},
        refused={path: str(result) for _prio, path, result in made_of if isinstance(result, SpecError)})


def _add(spec: SpecFile, priority: int, devices: dict[str, tuple[int, SpecFile]], conflicts: dict[str, list[str]]) -> None:
    for name in spec.devices:
        qualified = spec.qualified(name)
        held = devices.get(qualified)
        if held is not None and held[0] == priority:
            conflicts.setdefault(qualified, [held[1].path]).append(spec.path)
            continue
        conflicts.pop(qualified, None)  # a later dir's definition settles an earlier dir's conflict
        devices[qualified] = (priority, spec)


CACHE = SpecCache()  # the daemon's: one set of spec dirs


def resolve(names: Sequence[str], dirs: Sequence[str], cache: SpecCache = CACHE) -> list[tuple[str, Edits]]:
    """The edits to apply for `names`, in order, each labelled with its source:
    a spec's own edits once, before those of its first device asked for, then
    each device's (the order of CDI's Go library). InvalidArgument naming a
    device that no spec defines."""
    catalog = cache.catalog(dirs)
    out: list[tuple[str, Edits]] = []
    specs_done: set[str] = set()
    for name in names:
        spec = catalog.devices.get(name)
        if spec is None:
            raise InvalidArgument(f"CDI device {name}: {_why_unknown(name, catalog, dirs)}")
        if spec.path not in specs_done:
            specs_done.add(spec.path)
            out.append((f"CDI spec {spec.path}", spec.edits))
        out.append((f"CDI device {name}", spec.devices[name.partition("=")[2]]))
    return out


def _why_unknown(name: str, catalog: Catalog, dirs: Sequence[str]) -> str:
    if name in catalog.conflicts:
        return f"defined by more than one spec of one dir ({', '.join(catalog.conflicts[name])}); remove all but one"
    why = f"no CDI spec in {', '.join(dirs) or '(no spec dirs)'} defines it"
    if catalog.refused:
        shown = [f"{path}: {reason}" for path, reason in sorted(catalog.refused.items())[:3]]
        why += f" (refused spec files: {'; '.join(shown)})"
    return why
