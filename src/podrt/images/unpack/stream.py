"""A layer's bytes: decompressed as their magic says, and counted and hashed
on the way (the diff_id) so a layer of any size is read once, front to back."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import tarfile
import zlib
from collections.abc import Iterator
from typing import Protocol

import zstandard

from podrt.images.unpack.problems import UnsafeLayer, noisy

CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Media type suffix -> compression it declares (the bytes still decide, see decompressed).
_DECLARED = (("+gzip", "gzip"), (".tar.gzip", "gzip"), ("+zstd", "zstd"), (".tar", "tar"))
DECODE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Prefixed:
    """`stream` with the bytes already read from its front put back."""

    def __init__(self, head: bytes, stream: Reader) -> None:
        self._head, self._stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size < 0:
            out, self._head = self._head + self._stream.read(), b""
            return out
        out, self._head = self._head[:size], self._head[size:]
        return out


class Digesting:
    """Counts and hashes every byte read through it."""

    def __init__(self, stream: Reader) -> None:
        self._stream = stream
        self._sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _declared_compression(media_type: str) -> str | None:
    kind = media_type.lower().split(";")[0].strip()
    for suffix, compression in _DECLARED:
        if kind.endswith(suffix):
            return compression
    if "+" in kind.rpartition("/")[2]:  # +encrypted, +bzip2, ...
        raise UnsafeLayer(f"layer media type {media_type!r} is not supported")
    return None  # no or an unknown media type: the magic decides


def compression(head: bytes) -> str:
    """"gzip", "zstd" or "tar", from a stream's first 4 bytes."""
    return "gzip" if head[:2] == _GZIP_MAGIC else "zstd" if head[:4] == _ZSTD_MAGIC else "tar"


@contextlib.contextmanager
def decompressed(stream: Reader, media_type: str) -> Iterator[Reader]:
    """The plain tar stream. The magic bytes decide, as in containerd: a
    registry's media type is sometimes wrong, and the diff_id check catches
    any stream that is not the layer."""
    declared = _declared_compression(media_type)
    head = b""
    while len(head) < 4 and (more := stream.read(4 - len(head))):  # a pipe may hand over fewer bytes
        head += more
    sniffed = compression(head)
    if declared is not None and declared != sniffed:
        noisy.warning("layer media type %s says %s but its bytes are %s", media_type, declared, sniffed)
    raw = _Prefixed(head, stream)
    if sniffed == "gzip":
        with gzip.GzipFile(fileobj=raw, mode="rb") as plain:  # type: ignore[call-overload]
            yield plain
    elif sniffed == "zstd":
        dctx = zstandard.ZstdDecompressor()
        with dctx.stream_reader(raw, read_across_frames=True, closefd=False) as plain:  # type: ignore[arg-type]
            yield plain
    else:
        yield raw
