"""Host device nodes for a container's CRI devices, resolved as CRI-O does:
the host path's symlinks are followed (/dev/disk/by-id/...), and a directory
means every device node below it, at the same place under container_path.
Each node is created in the container with the host node's mode and owner,
and allowed in its device cgroup with the request's permissions."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable

from podrt.errors import InvalidArgument
from podrt.model.container import Device
from podrt.oci.spec import DeviceNode

_TYPES = {stat.S_IFCHR: "c", stat.S_IFBLK: "b"}


def device_nodes(devices: Iterable[Device]) -> tuple[DeviceNode, ...]:
    """InvalidArgument for a host path that is missing or holds no device node."""
    nodes: list[DeviceNode] = []
    for n, device in enumerate(devices):
        nodes += _resolve(f"config.devices[{n}]", device)
    return tuple(nodes)


def _resolve(field: str, device: Device) -> list[DeviceNode]:
    real = os.path.realpath(device.host_path)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise InvalidArgument(f"{field}.host_path {device.host_path}: no such device ({exc.strerror})") from None
    access = device.permissions or "rwm"
    if stat.S_ISDIR(st.st_mode):
        found = list(_below(real, device.container_path, access))
        if not found:
            raise InvalidArgument(f"{field}.host_path {device.host_path} is a directory without device nodes")
        return found
    node = _node(device.container_path, st, access)
    if node is None:
        raise InvalidArgument(f"{field}.host_path {device.host_path} is not a character or block device")
    return [node]


def _below(root: str, container_root: str, access: str) -> Iterable[DeviceNode]:
    """Device nodes in a host directory tree; symlinks in it are skipped (runc's DeviceFromPath lstats)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone meanwhile
            node = _node(posixpath.join(container_root, os.path.relpath(path, root)), st, access)
            if node is not None:
                yield node


def _node(path: str, st: os.stat_result, access: str) -> DeviceNode | None:
    kind = _TYPES.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        return None
    return DeviceNode(path, kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode),
                      st.st_uid, st.st_gid, access)
