"""One CDI spec file, read and checked as the CDI spec and its Go library do:
YAML (.yaml) or JSON (.json); cdiVersion 0.3.0 to 1.0.0 (1.0.0 changed no
field of 0.8.0; 1.1.0 adds netDevices, which podrt cannot apply, and older
versions had another layout); an unknown field refuses the file; a file that
uses a field newer than its cdiVersion is refused too (the CDI spec's
minimum-version rule). A refused file is a SpecError with the reason."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import yaml

from podrt.oci.cdi import names

VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0")
HOOK_NAMES = frozenset({"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"})
NODE_TYPES = frozenset({"", "b", "c", "u", "p"})
MAX_ID = 2**32 - 1  # uid, gid and additionalGids are uint32 in CDI
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it


class SpecError(ValueError):
    """Why a spec file is refused."""


@attrs.frozen
class NodeEdit:
    """A deviceNodes entry; what it leaves out comes from the host's node (edits.py)."""

    path: str  # in the container
    host_path: str = ""  # "": path
    type: str = ""  # b, c, u, p; "": the host node's
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    permissions: str = ""  # cgroup access: some of rwm; "" is rwm, "none" nothing
    uid: int | None = None
    gid: int | None = None


@attrs.frozen
class MountEdit:
    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str = ""


@attrs.frozen
class HookEdit:
    name: str  # one of HOOK_NAMES
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@attrs.frozen
class Edits:
    """containerEdits: a spec's (applied with any of its devices) or a device's."""

    env: tuple[str, ...] = ()
    device_nodes: tuple[NodeEdit, ...] = ()
    mounts: tuple[MountEdit, ...] = ()
    hooks: tuple[HookEdit, ...] = ()
    additional_gids: tuple[int, ...] = ()
    intel_rdt: bool = False  # asked for; podrt refuses to apply it (edits.py)

    def empty(self) -> bool:
        return self == Edits()


@attrs.frozen
class SpecFile:
    path: str
    version: str
    vendor: str
    klass: str
    edits: Edits
    devices: Mapping[str, Edits]  # by device name, in file order

    def qualified(self, device: str) -> str:
        return f"{self.vendor}/{self.klass}={device}"


def parse(path: str, data: bytes) -> SpecFile:
    """The spec in `data` (JSON when path ends in .json, else YAML); SpecError for a bad one."""
    try:
        doc = json.loads(data) if path.endswith(".json") else yaml.load(data, Loader=_LOADER)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"not valid {'JSON' if path.endswith('.json') else 'YAML'}: {' '.join(str(exc).split())}") from None
    needs: dict[str, str] = {}  # feature -> the cdiVersion that brought it
    top = _Object(doc, "spec")
    version = top.text("cdiVersion", required=True).removeprefix("v")
    if version not in VERSIONS:
        raise SpecError(f"cdiVersion {version!r} is not one podrt reads ({', '.join(VERSIONS)})")
    kind = top.text("kind", required=True)
    try:
        vendor, klass = names.split_kind(kind)
    except ValueError as exc:
        raise SpecError(f"kind: {exc}") from None
    if "." in klass:
        needs["a '.' in the class of kind"] = "0.6.0"
    if top.annotations("annotations"):
        needs["annotations"] = "0.6.0"
    edits = _edits(top.take("containerEdits", dict, {}), "containerEdits", needs)
    devices: dict[str, Edits] = {}
    for n, raw in enumerate(top.take("devices", list, [], required=True)):
        where = f"devices[{n}]"
        dev = _Object(raw, where)
        name = dev.text("name", required=True)
        try:
            names.check_device_name(name)
        except ValueError as exc:
            raise SpecError(f"{where}.name: {exc}") from None
        if name[0].isdigit():
            needs[f"device name {name!r} starting with a digit"] = "0.5.0"
        if name in devices:
            raise SpecError(f"{where}: a second device named {name!r}")
        if dev.annotations("annotations"):
            needs[f"{where}.annotations"] = "0.6.0"
        devices[name] = _edits(dev.take("containerEdits", dict, {}), f"{where}.containerEdits", needs)
        dev.done()
        if devices[name].empty():
            raise SpecError(f"{where} ({name}): no containerEdits")
    top.done()
    if not devices:
        raise SpecError("no devices")
    for feature, since in needs.items():
        if _version(since) > _version(version):
            raise SpecError(f"{feature} needs cdiVersion {since} or later; the file says {version}")
    return SpecFile(path, version, vendor, klass, edits, devices)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _edits(raw: dict[str, Any], where: str, needs: dict[str, str]) -> Edits:
    obj = _Object(raw, where)
    env = obj.texts("env")
    _check_env(env, f"{where}.env")
    nodes = tuple(_node(item, f"{where}.deviceNodes[{n}]") for n, item in enumerate(obj.take("deviceNodes", list, [])))
    mounts = tuple(_mount(item, f"{where}.mounts[{n}]") for n, item in enumerate(obj.take("mounts", list, [])))
    hooks = tuple(_hook(item, f"{where}.hooks[{n}]") for n, item in enumerate(obj.take("hooks", list, [])))
    gids = tuple(_id(g, f"{where}.additionalGids[{n}]") for n, g in enumerate(obj.take("additionalGids", list, [])))
    rdt = obj.take("intelRdt", dict, None)
    if rdt is not None:
        rdt_obj = _Object(rdt, f"{where}.intelRdt")
        for key in ("closID", "l3CacheSchema", "memBwSchema"):
            rdt_obj.text(key)
        rdt_obj.done()
    obj.done()
    if any(m.type for m in mounts):
        needs[f"{where}.mounts[].type"] = "0.4.0"
    if any(d.host_path for d in nodes):
        needs[f"{where}.deviceNodes[].hostPath"] = "0.5.0"
    if rdt is not None or gids:
        needs[f"{where}.intelRdt or additionalGids"] = "0.7.0"
    return Edits(env, nodes, mounts, hooks, gids, rdt is not None)


def _node(raw: Any, where: str) -> NodeEdit:
    obj = _Object(raw, where)
    node = NodeEdit(
        path=obj.text("path", required=True), host_path=obj.text("hostPath"), type=obj.text("type"),
        major=obj.number("major", 0, 2**63 - 1) or 0, minor=obj.number("minor", 0, 2**63 - 1) or 0,
        file_mode=obj.number("fileMode", 0, MAX_ID), permissions=obj.text("permissions"),
        uid=obj.number("uid", 0, MAX_ID), gid=obj.number("gid", 0, MAX_ID))
    obj.done()
    if node.type not in NODE_TYPES:
        raise SpecError(f"{where}.type {node.type!r}: must be b, c, u or p")
    if node.permissions not in ("", "none") and node.permissions.strip("rwm"):
        raise SpecError(f"{where}.permissions {node.permissions!r}: must be some of r, w, m, or none")
    return node


def _mount(raw: Any, where: str) -> MountEdit:
    obj = _Object(raw, where)
    mount = MountEdit(obj.text("hostPath", required=True), obj.text("containerPath", required=True),
                      obj.texts("options"), obj.text("type"))
    obj.done()
    return mount


def _hook(raw: Any, where: str) -> HookEdit:
    obj = _Object(raw, where)
    hook = HookEdit(obj.text("hookName", required=True), obj.text("path", required=True), obj.texts("args"),
                    obj.texts("env"), obj.number("timeout", 1, 2**31 - 1))
    obj.done()
    if hook.name not in HOOK_NAMES:
        raise SpecError(f"{where}.hookName {hook.name!r}: must be one of {', '.join(sorted(HOOK_NAMES))}")
    _check_env(hook.env, f"{where}.env")
    return hook


def _check_env(env: tuple[str, ...], where: str) -> None:
    for n, item in enumerate(env):
        if item.find("=") <= 0:
            raise SpecError(f"{where}[{n}] {item!r}: must be NAME=value")


def _id(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise SpecError(f"{where}: must be an integer from 0 to {MAX_ID}, got {value!r}")
    return value


class _Object:
    """A mapping of the file, read key by key: a key left unread at done() is unknown."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: must be a mapping, got {type(value).__name__}")
        self._left, self._where = dict(value), where

    def take(self, key: str, kind: type, default: Any, *, required: bool = False) -> Any:
        value = self._left.pop(key, None)  # None too for YAML's "key:" with nothing after it
        if value is None:
            if required:
                raise SpecError(f"{self._where}.{key}: missing")
            return default
        _check_kind(value, kind, f"{self._where}.{key}")
        return value

    def text(self, key: str, *, required: bool = False) -> str:
        value: str = self.take(key, str, "", required=required)
        if required and not value:
            raise SpecError(f"{self._where}.{key}: empty")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        items: list[Any] = self.take(key, list, [])
        for n, item in enumerate(items):
            _check_kind(item, str, f"{self._where}.{key}[{n}]")
        return tuple(items)

    def number(self, key: str, lo: int, hi: int) -> int | None:
        value: int | None = self.take(key, int, None)
        if value is not None and not lo <= value <= hi:
            raise SpecError(f"{self._where}.{key}: {value} is out of range ({lo} to {hi})")
        return value

    def annotations(self, key: str) -> dict[str, str]:
        found: dict[Any, Any] = self.take(key, dict, {})
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in found.items()):
            raise SpecError(f"{self._where}.{key}: keys and values must be strings")
        return found

    def done(self) -> None:
        if self._left:
            raise SpecError(f"{self._where}: unknown field(s) {', '.join(map(str, self._left))}")


_KINDS: dict[type, str] = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}


def _check_kind(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SpecError(f"{where}: must be {_KINDS[kind]}, got {type(value).__name__}")
