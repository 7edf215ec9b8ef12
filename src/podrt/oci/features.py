"""What a runtime handler can do on this host: Status's RuntimeHandlerFeatures,
and the check a request for such a feature gets.

A handler's binary says what it takes through `<runtime> features` (the OCI
features document; runc 1.1 has it, crun 1.8 does not); the kernel must have
what the feature needs. Results are kept per binary (path, inode, mtime), so
an upgraded runc is asked again and Status costs no process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Any

import attrs

from podrt.host import proc

log = logging.getLogger(__name__)

FEATURES_TIMEOUT = 10.0
MOUNT_SETATTR_KERNEL = (5, 12)  # mount_setattr(2), which `rro` needs: MOUNT_ATTR_RDONLY with AT_RECURSIVE


@attrs.frozen
class HandlerFeatures:
    rro: bool = False  # recursive read-only mounts (the `rro` mount option)
    userns: bool = False  # pods in user namespaces, volumes included (userns_supported)


def detect(runtime_path: str) -> HandlerFeatures:
    """The features of the handler whose binary is `runtime_path`; blocks
    (runs the binary) the first time for each binary, so call it in a thread."""
    try:
        st = os.stat(runtime_path)
    except OSError:
        return HandlerFeatures()
    key = (runtime_path, st.st_ino, st.st_mtime_ns)
    with _lock:
        if (known := _cache.get(key)) is not None:
            return known
    try:
        doc = features_document(runtime_path)
    except (OSError, TimeoutError) as exc:  # not kept: the next call asks again
        log.warning("%s features: %s; reporting no optional features for now", runtime_path, exc)
        return HandlerFeatures()
    found = HandlerFeatures(rro=rro_supported(doc, os.uname().release), userns=userns_supported(runtime_path, doc))
    with _lock:
        _cache[key] = found
    return found


_cache: dict[tuple[str, int, int], HandlerFeatures] = {}
_lock = threading.Lock()


def features_document(runtime_path: str) -> dict[str, Any] | None:
    """`<runtime> features` as JSON; None when the binary has no such command
    (crun 1.8.1: "unknown command features") or its answer is unreadable.
    OSError or TimeoutError when it could not be run."""
    code, out, err = proc.run_sync([runtime_path, "features"], timeout=FEATURES_TIMEOUT)
    if code != 0:
        log.info("%s has no `features` command (%s); reporting no optional features", runtime_path, err.strip()[:200])
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        log.warning("%s features: not JSON; reporting no optional features", runtime_path)
        return None
    return doc if isinstance(doc, dict) else None


def rro_supported(doc: dict[str, Any] | None, kernel_release: str) -> bool:
    """The runtime takes the `rro` mount option (as containerd asks it) and the
    kernel has mount_setattr. A runtime without a features document is not
    probed by running a container: it reports false, as in containerd."""
    options = (doc or {}).get("mountOptions")
    return isinstance(options, list) and "rro" in options and kernel_at_least(kernel_release, MOUNT_SETATTR_KERNEL)


def userns_supported(runtime_path: str, doc: dict[str, Any] | None) -> bool:
    """The runtime's part of pods in user namespaces: it joins one (its
    document lists the user namespace; runc 1.1 does). podrt makes the
    namespace and the ID-mapped mounts itself; whether the host allows those
    is host/idmap.py's, which Status and RunPodSandbox ask besides."""
    linux = (doc or {}).get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    return isinstance(namespaces, list) and "user" in namespaces


def kernel_at_least(release: str, wanted: tuple[int, int]) -> bool:
    """`release` as uname gives it ("6.1.0-18-amd64", "5.12.0"); False when unreadable."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return found is not None and (int(found[1]), int(found[2])) >= wanted
