"""The pause image every pod's infra container runs from.

By default it is the builtin one: the host's static catatonit as a real
image in the store, built at the first start, so a fresh machine needs no
registry. It is one layer; its unpacked directory is the infra's root as it
is (read-only, shared by every pod, no per-pod overlay), with the mount
points the spec binds over already in it. The layer is built in memory with
fixed times and owners, so the same catatonit always gives the same image
ID, and a new catatonit a new image.

A configured `pause_image` reference (registry.k8s.io/pause:3.10, say) is
pulled at the first RunPodSandbox that needs it, as CRI-O does, and each pod
gets an overlay of its layers (a writable upper of its own: runc makes mount
points in the root). Its command is the image's entrypoint and cmd.

Only the configured pause image is pinned. One that a config change or a
new catatonit replaced is unpinned at start; pods that still run from it
keep it from removal (ImageManager asks who uses an image).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import attrs

from podrt import errors
from podrt.config import ImageConfig
from podrt.images.blobs import chunks_of, digest_of
from podrt.images.manager import ImageManager
from podrt.images.pull import host_platform
from podrt.images.store import ImageRecord, ImageStore
from podrt.oci.reference import parse

BUILTIN_PAUSE_IMAGE = "podrt.local/pause:builtin"
STOP_SIGNAL = "SIGTERM"  # catatonit exits on SIGTERM/SIGINT
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
_DIRS = ("proc", "sys", "dev", "dev/shm", "dev/pts", "etc", "tmp")
_FILES = ("etc/hostname", "etc/resolv.conf", "etc/hosts")
_MTIME = 1_700_000_000


@attrs.frozen
class PauseImage:
    reference: str
    image_id: str
    command: tuple[str, ...]
    rootfs: Path | None = None  # the builtin's layer, used as it is; None: an overlay of `lowers` per pod
    lowers: tuple[str, ...] = ()  # layer links (top first), relative to the images dir
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
    return PauseImage(name, image_id, command, rootfs=store.layer_dir(diff_id) / "diff")


def is_builtin(reference: str) -> bool:
    """Whether a configured pause_image names the builtin one (built from catatonit)."""
    return str(parse(reference)) == str(parse(BUILTIN_PAUSE_IMAGE))


class PauseSource:
    """The configured pause image, resolved (and pulled) when a pod needs it."""

    def __init__(self, images: ImageManager, config: ImageConfig) -> None:
        self.images, self.config = images, config
        self.reference = str(parse(config.pause_image))
        self.builtin = is_builtin(config.pause_image)
        self._current: PauseImage | None = None

    async def start(self) -> None:
        """Build the builtin image, or pin the configured one if it is there;
        unpin pause images of an earlier config or catatonit."""
        store = self.images.store
        if self.builtin:
            self._current = await ensure_builtin(store, Path(self.config.catatonit_path), tuple(self.config.pause_command))
        else:
            present = await self.images.find(self.reference)
            if present is not None and self.images.whole(present):
                self._current = self._resolve(await self.images.keep(attrs.evolve(present, pinned=True)))
        current = self._current.image_id if self._current else None
        for record in store.records():
            if record.pinned and record.id != current:
                store.save(attrs.evolve(record, pinned=False))

    async def get(self) -> PauseImage:
        """The pause image, pulled first when the store lacks it (or a layer of it)."""
        current = self._current
        if current is not None and (self.builtin or self._present(current)):
            return current
        try:
            record = await self.images.pull(self.reference)
        except errors.PodrtError as exc:
            raise type(exc)(f"pause image {self.reference}: {exc}") from None
        self._current = self._resolve(await self.images.keep(attrs.evolve(record, pinned=True)))
        return self._current

    def _present(self, pause: PauseImage) -> bool:
        record = self.images.store.get(pause.image_id)
        return record is not None and self.images.whole(record)

    def _resolve(self, record: ImageRecord) -> PauseImage:
        inner = self.images.view(record).config.get("config")
        inner = inner if isinstance(inner, dict) else {}
        command = tuple(str(a) for a in (inner.get("Entrypoint") or []) + (inner.get("Cmd") or []))
        lowers = tuple(self.images.store.lower_link(chain) for chain in reversed(record.layers))
        return PauseImage(self.reference, record.id, command or tuple(self.config.pause_command), lowers=lowers,
                          stop_signal=str(inner.get("StopSignal") or STOP_SIGNAL))
