"""The one on-disk format of pod and container records: a JSON object with
`version`, `kind` ("sandbox" or "container"), the record's persisted fields
and its teardown plan as `steps` ({kind, name, data} each).

Version 1 (podrt before the typed store: two formats, the plan as positional
`records` [name, kind, data]) is still read, converted on read: a daemon
upgraded in place restarts on its predecessor's state. It is written back in
version 2 at the record's next change.
"""

from __future__ import annotations

import abc
import enum
import json
from typing import Any, ClassVar, Generic, TypeVar

import attrs

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
from podrt.model.sandbox import (
    DnsConfig,
    IdMapping,
    NamespaceOptions,
    NsMode,
    PortMapping,
    SandboxConfig,
    SeccompProfile,
    UserNamespace,
)
from podrt.security.seccomp import ProfileType
from podrt.security.selinux import SelinuxOptions
from podrt.state.records import ContainerState, PlanStep, SandboxState

FORMAT_VERSION = 2
LEGACY_VERSION = 1

R = TypeVar("R", SandboxState, ContainerState)


def _plain(_inst: Any, _attr: Any, value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _persisted(record: Any) -> dict[str, Any]:
    """The record's fields that are written (not the IN_MEMORY ones), unconverted."""
    return {f.name: getattr(record, f.name) for f in attrs.fields(type(record)) if f.metadata.get("persisted", True)}


class RecordFormat(abc.ABC, Generic[R]):
    """Bytes to a record and back, for one kind of record."""

    kind: ClassVar[str]

    def encode(self, record: R) -> bytes:
        doc: dict[str, Any] = {"version": FORMAT_VERSION, "kind": self.kind, **_persisted(record)}
        doc["steps"] = [attrs.asdict(s) for s in record.steps]
        doc.update(self._encode_fields(record))
        return json.dumps(doc).encode()

    def decode(self, raw: bytes) -> R:
        """ValueError, KeyError or TypeError for a file that is not a record of this kind."""
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("a state file holds a JSON object")
        version = doc.pop("version", None)
        if version == LEGACY_VERSION:
            doc["steps"] = [{"name": name, "kind": kind, "data": data} for name, kind, data in doc.pop("records")]
        elif version == FORMAT_VERSION:
            kind = doc.pop("kind", None)
            if kind != self.kind:
                raise ValueError(f"a {kind!r} record where a {self.kind!r} one belongs")
        else:
            raise ValueError(f"unsupported state version {version!r}")
        doc["steps"] = tuple(PlanStep(kind=s["kind"], name=s["name"], data=s["data"]) for s in doc["steps"])
        return self._decode_fields(doc)

    @abc.abstractmethod
    def _encode_fields(self, record: R) -> dict[str, Any]:
        """The fields that are not plain JSON already."""

    @abc.abstractmethod
    def _decode_fields(self, doc: dict[str, Any]) -> R:
        """The record from the document (its steps already typed)."""


# ---- pods ---------------------------------------------------------------------------


def config_to_dict(cfg: SandboxConfig | ContainerConfig) -> dict[str, Any]:
    """A pod's or a container's config as plain JSON values (enums by their value)."""
    return attrs.asdict(cfg, value_serializer=_plain)


def sandbox_config_from_dict(d: dict[str, Any]) -> SandboxConfig:
    d = dict(d)
    d["dns"] = DnsConfig(**{k: tuple(v) for k, v in d["dns"].items()}) if d.get("dns") else None
    d["port_mappings"] = tuple(PortMapping(**p) for p in d.get("port_mappings", ()))
    d["namespaces"] = NamespaceOptions(**{k: NsMode(v) for k, v in d["namespaces"].items()})
    d["seccomp"] = SeccompProfile(ProfileType(d["seccomp"]["type"]), d["seccomp"]["localhost_ref"])
    d["selinux"] = SelinuxOptions(**d["selinux"]) if d.get("selinux") else None
    d["supplemental_groups"] = tuple(d.get("supplemental_groups", ()))
    d["userns"] = _userns(d["userns"]) if d.get("userns") else UserNamespace()
    return SandboxConfig(**d)


def _userns(d: dict[str, Any]) -> UserNamespace:
    return UserNamespace(NsMode(d["mode"]), *(tuple(IdMapping(**m) for m in d[k]) for k in ("uids", "gids")))


class SandboxFormat(RecordFormat[SandboxState]):
    kind = "sandbox"

    def _encode_fields(self, record: SandboxState) -> dict[str, Any]:
        return {"config": config_to_dict(record.config),
                **{k: None if (r := getattr(record, k)) is None else attrs.asdict(r) for k in ("overhead", "resources")}}

    def _decode_fields(self, doc: dict[str, Any]) -> SandboxState:
        doc["config"] = sandbox_config_from_dict(doc["config"])
        doc["unclaimed"] = bool(doc.get("unclaimed", False))
        for key in ("overhead", "resources"):  # absent before UpdatePodSandboxResources
            doc[key] = _resources(doc[key]) if doc.get(key) is not None else None
        return SandboxState(**doc)


# ---- containers -----------------------------------------------------------------------


def container_config_from_dict(d: dict[str, Any]) -> ContainerConfig:
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
    d["userns"] = _userns(d["userns"]) if d.get("userns") else None
    for key in ("command", "args", "supplemental_groups", "add_capabilities", "drop_capabilities",
                "masked_paths", "readonly_paths", "cdi_devices"):
        d[key] = tuple(d.get(key, ()))
    return ContainerConfig(**d)


def _resources(d: dict[str, Any]) -> Resources:
    return Resources(**{**d, "hugepage_limits": tuple(HugepageLimit(**h) for h in d.get("hugepage_limits", ()))})


class ContainerFormat(RecordFormat[ContainerState]):
    kind = "container"

    def _encode_fields(self, record: ContainerState) -> dict[str, Any]:
        return {"config": config_to_dict(record.config),
                "user": attrs.asdict(record.user) if record.user else None}

    def _decode_fields(self, doc: dict[str, Any]) -> ContainerState:
        doc["config"] = container_config_from_dict(doc["config"])
        user = doc.get("user")
        doc["user"] = ContainerUser(user["uid"], user["gid"], tuple(user["supplemental_groups"])) if user else None
        return ContainerState(**doc, saved_exit=doc.get("exit_code") is not None)


SANDBOX_FORMAT = SandboxFormat()
CONTAINER_FORMAT = ContainerFormat()
