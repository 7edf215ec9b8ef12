"""The builtin pause image: the host's static catatonit as a real, pinned image
in the store, built at the first start, so a fresh machine needs no registry.

It is one layer; its unpacked directory is the infra container's root as it
is (read-only, shared by every pod, no per-pod copy or overlay), with the
mount points the spec binds over already in it. The layer is built in
memory with fixed times and owners, so the same catatonit always gives the
same image ID, and a new catatonit a new image (the old one is then
unpinned and collected like any other).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import attrs

from podrt.images.blobs import chunks_of, digest_of
from podrt.images.pull import host_platform
from podrt.images.reference import parse
from podrt.images.store import ImageRecord, ImageStore

BUILTIN_PAUSE_IMAGE = "podrt.local/pause:builtin"
STOP_SIGNAL = "SIGTERM"  # catatonit exits on SIGTERM/SIGINT
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
_DIRS = ("proc", "sys", "dev", "dev/shm", "dev/pts", "etc", "tmp")
_FILES = ("etc/hostname", "etc/resolv.conf", "etc/hosts")
_MTIME = 1_700_000_000


@attrs.frozen
class PauseImage:
    reference: str
    rootfs: Path
    image_id: str = ""
    stop_signal: str = STOP_SIGNAL


def _layer(catatonit: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.size = kind, mode, _MTIME, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in _DIRS:
            add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        for f in _FILES:
            add(f, tarfile.REGTYPE, 0o644)
        add("catatonit", tarfile.REGTYPE, 0o755, catatonit.read_bytes())
    return buf.getvalue()




async def ensure_builtin(store: ImageStore, catatonit: Path, command: tuple[str, ...]) -> PauseImage:
    """The builtin pause image, built into `store` unless it is there already."""
    if not catatonit.is_file():
        raise FileNotFoundError(f"catatonit not found at {catatonit} (apt-get install catatonit)")
    layer = _layer(catatonit)
    diff_id = digest_of(layer)
    os_, arch, _ = host_platform()
    config = json.dumps({"architecture": arch, "os": os_, "config": {"Entrypoint": list(command), "StopSignal": STOP_SIGNAL},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}, sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": len(config)},
                           "layers": [{"mediaType": LAYER_TYPE, "digest": diff_id, "size": len(layer)}]}, sort_keys=True).encode()
    name = str(parse(BUILTIN_PAUSE_IMAGE))
    image_id = digest_of(config)
    if store.get(image_id) is None or not store.has_layer(diff_id):
        for data in (layer, config, manifest):
            if not store.blobs.has(digest_of(data)):
                await store.blobs.write(digest_of(data), len(data), chunks_of(data))
        await store.add_layer(diff_id, diff_id, diff_id, LAYER_TYPE)
    store.keep(ImageRecord(id=image_id, repo_tags=(name,), repo_digests=(), manifest_digest=digest_of(manifest),
                           layers=(diff_id,), size=len(config) + len(layer), created_at=time.time_ns(), pinned=True))
    return PauseImage(name, store.layer_dir(diff_id) / "diff", image_id)
