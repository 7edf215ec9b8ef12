"""CDI edits applied to a container's built OCI spec (the config.json dict),
in the order and with the rules of CDI's Go library, which CRI-O and
containerd use:

- env: NAME=value, replacing the variable of that name (the CRI's included)
  or appended;
- deviceNodes: a node at the same container path is replaced; what the
  entry leaves out (type, major/minor, file mode) comes from the host's
  node (hostPath, else path), needed unless the entry gives a type and a
  major (or is a FIFO); uid and gid default to the process's; b and c nodes
  get a device cgroup rule with the entry's permissions ("" is rwm; "none"
  gets no rule, which allows nothing as CDI's empty rule would, and which
  runc 1.1 takes where it refuses an empty access);
- mounts: a mount at the same destination is replaced, then all mounts are
  sorted by depth (parents first, stably);
- hooks: appended to the OCI hook of their name;
- additionalGids: added to the process's, but 0 and those it has;
- intelRdt: refused (FailedPrecondition): podrt keeps no resctrl groups.
A host node that is missing or not a device is FailedPrecondition naming the
device: the request is fine, the host is not ready for it."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from typing import Any

from podrt.errors import FailedPrecondition
from podrt.oci.cdi.specfile import Edits, NodeEdit
from podrt.oci.spec import DeviceNode, device_entry, device_rule

_HOST_TYPES = {stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFIFO: "p"}


def apply(spec: dict[str, Any], parts: Sequence[tuple[str, Edits]]) -> None:
    """Edit `spec` in place with `parts` ((where the edits come from, edits), in order)."""
    if refused := next((label for label, e in parts if e.intel_rdt), None):
        raise FailedPrecondition(f"{refused}: intelRdt edits are not supported (podrt manages no resctrl groups)")
    process, linux = spec["process"], spec["linux"]
    _set_env(process["env"], [item for _label, e in parts for item in e.env])
    user = process["user"]
    for label, e in parts:
        for node in e.device_nodes:
            _add_device(linux, _device(label, node, user["uid"], user["gid"]))
    if mounts := [m for _label, e in parts for m in e.mounts]:
        for m in mounts:
            entry: dict[str, Any] = {"destination": m.container_path, "source": m.host_path}
            if m.type:
                entry["type"] = m.type
            if m.options:
                entry["options"] = list(m.options)
            spec["mounts"] = [x for x in spec["mounts"] if x["destination"] != m.container_path] + [entry]
        spec["mounts"].sort(key=lambda x: _depth(x["destination"]))
    for _label, e in parts:
        for hook in e.hooks:
            entry = {"path": hook.path, "args": list(hook.args), "env": list(hook.env)}
            if hook.timeout is not None:
                entry["timeout"] = hook.timeout
            spec.setdefault("hooks", {}).setdefault(hook.name, []).append(entry)
    if gids := [g for _label, e in parts for g in e.additional_gids if g != 0]:
        have = user.setdefault("additionalGids", [])
        have += [g for g in dict.fromkeys(gids) if g not in have]


def _set_env(env: list[str], items: list[str]) -> None:
    where = {item.partition("=")[0]: n for n, item in enumerate(env)}
    for item in items:
        name = item.partition("=")[0]
        if name in where:
            env[where[name]] = item
        else:
            where[name] = len(env)
            env.append(item)


def _device(label: str, node: NodeEdit, uid: int, gid: int) -> DeviceNode:
    """The node with what it leaves out taken from the host's node."""
    host = node.host_path or node.path
    kind, major, minor, mode = node.type, node.major, node.minor, node.file_mode
    complete = kind != "" and (major != 0 or kind == "p")  # CDI's "minimally specified"
    found = _host_node(host)
    if isinstance(found, str):
        if not complete:
            raise FailedPrecondition(f"{label}: device node {node.path}: host node {host}: {found}")
        return _node(node, kind, major, minor, mode, uid, gid)
    st, host_kind = found
    if mode is None:
        mode = st.st_mode
    if not complete:
        kind = kind or host_kind
        if kind != host_kind:
            raise FailedPrecondition(f"{label}: device node {node.path} is of type {kind}, but the host's {host} is {host_kind}")
        if kind != "p" and major == 0:
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return _node(node, kind, major, minor, mode, uid, gid)


def _host_node(host: str) -> tuple[os.stat_result, str] | str:
    """The host's device node (its stat and type; symlinks followed), or why there is none."""
    try:
        st = os.stat(host)
    except OSError as exc:
        return exc.strerror or str(exc)
    kind = _HOST_TYPES.get(stat.S_IFMT(st.st_mode))
    return (st, kind) if kind else "not a device node"


def _node(node: NodeEdit, kind: str, major: int, minor: int, mode: int | None, uid: int, gid: int) -> DeviceNode:
    access = {"": "rwm", "none": ""}.get(node.permissions, node.permissions)
    return DeviceNode(node.path, kind, major, minor, stat.S_IMODE(mode) if mode is not None else 0o666,
                      node.uid if node.uid is not None else uid, node.gid if node.gid is not None else gid, access)


def _add_device(linux: dict[str, Any], node: DeviceNode) -> None:
    linux["devices"] = [d for d in linux.get("devices", ()) if d["path"] != node.path] + [device_entry(node)]
    if node.type in ("b", "c") and node.access:  # "none": no rule (runc 1.1 refuses an empty access; allowing nothing is the same)
        linux["resources"]["devices"].append(device_rule(node))


def _depth(destination: str) -> int:
    """Path components, as Go's filepath.Clean counts them ("//a" is "/a")."""
    clean = posixpath.normpath(destination)
    return (clean[1:] if clean.startswith("//") else clean).count("/")
