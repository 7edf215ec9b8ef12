"""A container as persisted in `<root>/containers/<id>/state.json`: the
request, what creation decided, the teardown plan (its step records) and
what happened since (start, exit). Written whole (atomic_write) on each change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from podrt.container.model import ContainerConfig, Mount, Propagation, Resources
from podrt.fsutil import atomic_write
from podrt.oci.seccomp import ProfileType
from podrt.sandbox.model import NsMode
from podrt.selinux import SelinuxOptions

STATE_FILE = "state.json"
FORMAT_VERSION = 1


def config_to_dict(cfg: ContainerConfig) -> dict[str, Any]:
    return attrs.asdict(cfg, value_serializer=lambda _i, _a, v: v.value if isinstance(v, (ProfileType, Propagation, NsMode)) else v)


def config_from_dict(d: dict[str, Any]) -> ContainerConfig:
    d = dict(d)
    d["mounts"] = tuple(Mount(m["container_path"], m["host_path"], m["readonly"], Propagation(m["propagation"]))
                        for m in d.get("mounts", ()))
    d["resources"] = Resources(**d.get("resources", {}))
    d["seccomp"] = ProfileType(d.get("seccomp", ProfileType.UNCONFINED.value))
    d["selinux"] = SelinuxOptions(**d["selinux"]) if d.get("selinux") else None
    d["pid_mode"] = NsMode(d.get("pid_mode", NsMode.CONTAINER.value))
    d["envs"] = tuple(tuple(e) for e in d.get("envs", ()))
    for key in ("command", "args", "supplemental_groups", "add_capabilities", "drop_capabilities"):
        d[key] = tuple(d.get(key, ()))
    return ContainerConfig(**d)


@attrs.define
class ContainerState:
    id: str
    sandbox_id: str
    name: str  # the reserved k8s_... name
    config: ContainerConfig
    image_id: str
    image_ref: str  # the image as the request named it
    runtime_handler: str
    log_path: str  # absolute
    stop_signal: str
    created_at: int  # ns since the epoch
    records: list[list[Any]]  # [name, kind, data] of each committed step, in order
    cgroups_path: str = ""  # runc's cgroupsPath, where an OOM kill is counted
    pid: int = 0
    conmon_pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int | None = None
    reason: str = ""
    path: str = ""

    def to_json(self) -> bytes:
        doc = attrs.asdict(self, recurse=False)
        doc.pop("path")
        doc["config"] = config_to_dict(self.config)
        doc["version"] = FORMAT_VERSION
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: str) -> "ContainerState":
        doc = json.loads(raw)
        if doc.pop("version", None) != FORMAT_VERSION:
            raise ValueError("unknown state format version")
        doc["config"] = config_from_dict(doc["config"])
        return cls(**doc, path=path)

    def save(self) -> None:
        atomic_write(Path(self.path), self.to_json())


def load_all(containers_dir: Path) -> tuple[list[ContainerState], list[tuple[Path, str]]]:
    """Every saved container, and (path, problem) for unreadable ones."""
    states, bad = [], []
    if not containers_dir.is_dir():
        return states, bad
    for d in sorted(containers_dir.iterdir()):
        path = d / STATE_FILE
        if not path.is_file():
            continue
        try:
            states.append(ContainerState.from_json(path.read_bytes(), str(path)))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            bad.append((path, str(exc)))
    return states, bad
