"""Content-addressed blobs: `<images>/blobs/sha256/<hex>`, written only whole and verified.

A download streams into `<images>/ingest/<random>` while its sha256 and size
are counted, is fsynced, and is renamed into place only when both match what
the manifest promised; a mismatch or a cancel deletes the partial file. A
blob path therefore always holds verified content, and a crash at any moment
leaves at most an ingest file, which `clean_ingest` removes at the next
start. Writes go through aiofiles: blob data arrives on the event loop and
must not block it. Two pulls that need the same blob share one download
(`fetch_once`), which is cancelled only when every waiter has gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiofiles  # type: ignore[import-untyped]
import aiofiles.os  # type: ignore[import-untyped]

from podrt.aio import SharedTask
from podrt.host.fsutil import fsync_dir, usage

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


class BlobMismatch(ValueError):
    """The bytes received are not the blob the manifest named (digest or size)."""


async def chunks_of(data: bytes) -> AsyncGenerator[bytes, None]:
    """Bytes already in memory (a manifest, a config) as the stream `write` takes."""
    yield data


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(digest: str) -> str:
    """The hex part of a sha256 digest; ValueError for anything else."""
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise ValueError(f"unsupported or malformed digest {digest!r} (only sha256 is accepted)")
    return match.group(1)


class BlobStore:
    def __init__(self, images_dir: Path) -> None:
        self.blobs = images_dir / "blobs" / "sha256"
        self.ingest_dir = images_dir / "ingest"
        self._downloads: dict[str, SharedTask[Path]] = {}

    def prepare(self) -> None:
        """At start: the dirs exist and no partial download survives."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.clean_ingest()

    def clean_ingest(self) -> None:
        shutil.rmtree(self.ingest_dir, ignore_errors=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs / parse_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        return [f"sha256:{p.name}" for p in self.blobs.iterdir() if _DIGEST.fullmatch(f"sha256:{p.name}")]

    async def write(self, digest: str | None, size: int | None, chunks: AsyncIterator[bytes],
                    progress: Callable[[int], None] | None = None) -> Path:
        """Stream `chunks` into the store as `digest`; BlobMismatch (and nothing
        stored) when the bytes are not it. `size` None: not known in advance;
        `digest` None: content whose digest is learnt on the way (an archive's
        layer), stored under it."""
        want = parse_digest(digest) if digest is not None else None
        tmp = self.ingest_dir / f"{(want or 'unknown')[:16]}-{uuid.uuid4().hex[:8]}"
        hasher, count = hashlib.sha256(), 0
        try:
            async with aiofiles.open(tmp, "wb") as f:
                async for chunk in chunks:
                    count += len(chunk)
                    if size is not None and count > size:
                        raise BlobMismatch(f"blob {digest}: more than the {size} bytes the manifest gives")
                    hasher.update(chunk)
                    await f.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                await f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())
            if size is not None and count != size:
                raise BlobMismatch(f"blob {digest}: got {count} bytes, the manifest gives {size}")
            if want is not None and hasher.hexdigest() != want:
                raise BlobMismatch(f"blob {digest}: content has digest sha256:{hasher.hexdigest()}")
            target = self.blobs / hasher.hexdigest()
            await aiofiles.os.rename(tmp, target)
            await asyncio.to_thread(fsync_dir, self.blobs)
        except BaseException:
            tmp.unlink(missing_ok=True)  # one unlink: not worth a thread, and it must run when cancelled
            raise
        return target

    async def fetch_once(self, digest: str, fetch: Callable[[], Coroutine[Any, Any, Path]]) -> Path:
        """The blob's path, running `fetch` (which writes it) at most once at a
        time per digest, shared by every concurrent caller."""
        if self.has(digest):
            return self.path(digest)
        shared = self._downloads.get(digest)
        if shared is None or shared.done():
            shared = self._downloads[digest] = SharedTask(fetch(), name=f"blob {digest}")
            shared.add_done_callback(lambda _t: self._downloads.pop(digest, None) if self._downloads.get(digest) is shared else None)
        return await shared.wait()

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) the blobs use, for ImageFsInfo."""
        return usage([self.blobs])
