"""The sandbox as persisted in `<root>/sandboxes/<id>/state.json`, and back.

The file holds the request, every decision the steps made and the teardown
plan (the committed step records), so stop/remove after a restart run exactly
the undos that creation's steps defined.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from podrt.host.fsutil import atomic_write
from podrt.model.sandbox import (
    DnsConfig,
    NamespaceOptions,
    NsMode,
    PortMapping,
    ProfileType,
    SandboxConfig,
    SeccompProfile,
    SelinuxOptions,
)

STATE_FILE = "state.json"
FORMAT_VERSION = 1
_CTX_FIELDS = (
    "id", "runtime_handler", "created_at", "pod_name", "infra_name", "log_directory", "hostname",
    "shm_path", "resolv_conf", "hostname_file", "cgroup_parent", "cgroups_path", "conmon_cgroup",
    "netns_path", "ips", "infra_pid", "conmon_pid",
)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, (NsMode, ProfileType)) else value


def config_to_dict(cfg: SandboxConfig) -> dict[str, Any]:
    return attrs.asdict(cfg, value_serializer=lambda _i, _a, v: _plain(v))


def config_from_dict(d: dict[str, Any]) -> SandboxConfig:
    d = dict(d)
    d["dns"] = DnsConfig(**{k: tuple(v) for k, v in d["dns"].items()}) if d.get("dns") else None
    d["port_mappings"] = tuple(PortMapping(**p) for p in d.get("port_mappings", ()))
    d["namespaces"] = NamespaceOptions(**{k: NsMode(v) for k, v in d["namespaces"].items()})
    d["seccomp"] = SeccompProfile(ProfileType(d["seccomp"]["type"]), d["seccomp"]["localhost_ref"])
    d["selinux"] = SelinuxOptions(**d["selinux"]) if d.get("selinux") else None
    d["supplemental_groups"] = tuple(d.get("supplemental_groups", ()))
    return SandboxConfig(**d)


@attrs.define
class SandboxState:
    """A created sandbox: what ListPodSandbox/PodSandboxStatus show and stop/remove use."""

    id: str
    config: SandboxConfig
    runtime_handler: str
    created_at: int
    pod_name: str
    infra_name: str
    log_directory: str
    hostname: str
    shm_path: str | None
    resolv_conf: str | None
    hostname_file: str
    cgroup_parent: str
    cgroups_path: str
    conmon_cgroup: str
    netns_path: str | None
    ips: list[str]
    infra_pid: int
    conmon_pid: int
    records: list[list[Any]]  # [name, kind, data] of each committed step, in order
    stopped: bool = False
    unclaimed: bool = False  # made for a client that left; removed unless a retry claims it
    path: str = ""

    def to_json(self) -> bytes:
        doc = {f: getattr(self, f) for f in _CTX_FIELDS}
        doc.update(version=FORMAT_VERSION, config=config_to_dict(self.config), records=self.records, stopped=self.stopped,
                   unclaimed=self.unclaimed)
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: str) -> SandboxState:
        doc = json.loads(raw)
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported state version {doc.get('version')!r}")
        fields = {f: doc[f] for f in _CTX_FIELDS}
        return cls(config=config_from_dict(doc["config"]), records=doc["records"], stopped=doc["stopped"],
                   unclaimed=bool(doc.get("unclaimed", False)), path=path, **fields)

    def save(self) -> None:
        atomic_write(Path(self.path), self.to_json())


def save_state(ctx: Any, path: str) -> SandboxState:
    """Called by the last creation step with the context and the records so far."""
    fields = {f: getattr(ctx, f) for f in _CTX_FIELDS}
    state = SandboxState(config=ctx.config, records=[list(r) for r in ctx.completed], path=path, **fields)
    state.save()
    return state


def load_all(sandboxes_dir: Path) -> tuple[list[SandboxState], list[tuple[Path, str]]]:
    """Every readable state file, and (path, problem) for the rest."""
    found, bad = [], []
    for state_file in sorted(sandboxes_dir.glob(f"*/{STATE_FILE}")):
        try:
            found.append(SandboxState.from_json(state_file.read_bytes(), str(state_file)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            bad.append((state_file, f"{type(exc).__name__}: {exc}"))
    return found, bad
