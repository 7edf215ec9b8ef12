"""What one import puts into the image store (blobs, unpacked layers), kept
track of so that a failed import removes it again: a refused archive leaves
nothing behind. Every blob is verified on its way in."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncGenerator

from podrt.images.archive.source import Problem
from podrt.images.blobs import BlobMismatch
from podrt.images.store import ImageStore
from podrt.images.unpack import CorruptLayer, UnsafeLayer, compression

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
LAYER_ZSTD = LAYER_TAR + "+zstd"


class Staging:
    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.new_blobs: list[str] = []  # what this import added, removed again if it fails
        self.new_layers: list[str] = []

    async def put(self, digest: str, size: int | None, chunks: AsyncGenerator[bytes, None], what: str) -> None:
        """Store a blob of known digest, verified by the blob store."""
        try:
            if self.store.blobs.has(digest):
                return
            try:
                await self.store.blobs.write(digest, size, chunks)
            except BlobMismatch as exc:
                raise Problem(f"{what}: {exc}") from None
            self.new_blobs.append(digest)
        finally:
            await chunks.aclose()  # closes the member now, not when collected

    async def put_computed(self, chunks: AsyncGenerator[bytes, None]) -> str:
        """Stream a member into the blob store, its digest learnt on the way."""
        try:
            path = await self.store.blobs.write(None, None, chunks)
        finally:
            await chunks.aclose()
        digest = f"sha256:{path.name}"
        if digest not in self.new_blobs:
            self.new_blobs.append(digest)
        return digest

    async def unpack(self, chain: str, diff_id: str, digest: str, media_type: str, what: str) -> None:
        """The layer of blob `digest` as layer `chain`, unless the store has it."""
        if self.store.has_layer(chain):
            return
        try:
            await self.store.add_layer(chain, diff_id, digest, media_type)
        except (UnsafeLayer, CorruptLayer, ValueError) as exc:
            raise Problem(f"layer {what}: {exc}") from None
        self.new_layers.append(chain)

    async def media_type(self, digest: str) -> str:
        """A layer blob's media type, from its compression (a docker save archive names none)."""
        def sniff() -> str:
            with open(self.store.blobs.path(digest), "rb") as f:
                return compression(f.read(4))

        kind = await asyncio.to_thread(sniff)
        return {"gzip": LAYER_GZIP, "zstd": LAYER_ZSTD}.get(kind, LAYER_TAR)

    def roll_back(self) -> None:
        """Blocking: remove the layers and blobs this import added that no record needs."""
        layers, blobs = self.store.referenced()
        for chain in self.new_layers:
            if chain in layers:
                continue
            try:
                link = self.store.dir / self.store.lower_link(chain)
            except (OSError, ValueError, KeyError):
                link = None
            shutil.rmtree(self.store.layer_dir(chain), ignore_errors=True)
            if link is not None:
                link.unlink(missing_ok=True)
        for digest in self.new_blobs:
            if digest not in blobs:
                self.store.blobs.delete(digest)
