"""A container as persisted in `<root>/containers/<id>/state.json`: the
request, what creation decided, the teardown plan (its step records) and
what happened since (start, exit). Written whole (atomic_write) on each change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from podrt.host.fsutil import atomic_write
from podrt.model.container import (
    ContainerConfig,
    ContainerUser,
    Device,
    GroupsPolicy,
    HugepageLimit,
    Mount,
    Propagation,
    Resources,
)
from podrt.model.sandbox import NsMode
from podrt.security.seccomp import ProfileType
from podrt.security.selinux import SelinuxOptions

STATE_FILE = "state.json"
FORMAT_VERSION = 1


def config_to_dict(cfg: ContainerConfig) -> dict[str, Any]:
    return attrs.asdict(cfg, value_serializer=lambda _i, _a, v: v.value if isinstance(v, _ENUMS) else v)


_ENUMS = (ProfileType, Propagation, NsMode, GroupsPolicy)


def config_from_dict(d: dict[str, Any]) -> ContainerConfig:
    d = dict(d)
    d["mounts"] = tuple(Mount(**{**m, "propagation": Propagation(m["propagation"])}) for m in d.get("mounts", ()))
    d["devices"] = tuple(Device(**x) for x in d.get("devices", ()))
    d["resources"] = _resources(d.get("resources", {}))
    d["seccomp"] = ProfileType(d.get("seccomp", ProfileType.UNCONFINED.value))
    d["apparmor"] = ProfileType(d.get("apparmor", ProfileType.RUNTIME_DEFAULT.value))
    d["groups_policy"] = GroupsPolicy(d.get("groups_policy", GroupsPolicy.MERGE.value))
    d["selinux"] = SelinuxOptions(**d["selinux"]) if d.get("selinux") else None
    d["pid_mode"] = NsMode(d.get("pid_mode", NsMode.CONTAINER.value))
    d["envs"] = tuple(tuple(e) for e in d.get("envs", ()))
    for key in ("command", "args", "supplemental_groups", "add_capabilities", "drop_capabilities",
                "masked_paths", "readonly_paths"):
        d[key] = tuple(d.get(key, ()))
    return ContainerConfig(**d)


def _resources(d: dict[str, Any]) -> Resources:
    return Resources(**{**d, "hugepage_limits": tuple(HugepageLimit(**h) for h in d.get("hugepage_limits", ()))})


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
    message: str = ""
    user: ContainerUser | None = None  # the ids its process runs with
    path: str = ""
    saved_exit: bool = False  # in memory: the exit is in the file and was announced
    lost: bool = False  # in memory: its conmon is gone while it runs; exit and logs cannot be known

    def to_json(self) -> bytes:
        doc = attrs.asdict(self, recurse=False)
        doc.pop("path")
        doc.pop("saved_exit")
        doc.pop("lost")
        doc["config"] = config_to_dict(self.config)
        doc["user"] = attrs.asdict(self.user) if self.user else None
        doc["version"] = FORMAT_VERSION
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: str) -> ContainerState:
        doc = json.loads(raw)
        if doc.pop("version", None) != FORMAT_VERSION:
            raise ValueError("unknown state format version")
        doc["config"] = config_from_dict(doc["config"])
        user = doc.get("user")
        doc["user"] = ContainerUser(user["uid"], user["gid"], tuple(user["supplemental_groups"])) if user else None
        return cls(**doc, path=path, saved_exit=doc.get("exit_code") is not None)

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
