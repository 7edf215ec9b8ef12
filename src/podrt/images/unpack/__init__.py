"""Apply one image layer (a tar stream) into an empty directory, as an overlayfs lower layer.

Each layer gets its own directory and the layers are stacked by overlayfs at
container start, as containerd's overlay snapshotter and containers/storage
do; so a layer is unpacked alone, and its whiteouts become what overlayfs
reads as whiteouts (a 0/0 character device; `trusted.overlay.opaque=y` on an
opaque directory) instead of deleting anything.

A layer is untrusted input. The Python we run on (Debian 12: 3.11.2) has no
tarfile extraction filters, and `extractall` would follow symlinks the layer
itself made, so every entry is written here by hand: names are normalised
lexically and may not climb out of the root, every directory is opened
component by component with O_NOFOLLOW relative to its parent's fd, and each
entry is created with O_EXCL / mknod / symlink / link relative to that fd; no
path the kernel resolves ever goes through a symlink from the layer.

The stream is decompressed and read once, front to back ('r|'), and hashed on
the way, so a layer of any size costs a bounded amount of memory and its
diff_id comes for free.

Modules: stream (decompressing and hashing), tree (writing the entries),
paths (names and fd-relative walking), whiteouts, meta (owners, modes, times,
xattrs), problems (the errors and rate-limited warnings).
"""

from __future__ import annotations

import contextlib
import tarfile
from pathlib import Path
from typing import BinaryIO

import attrs

from podrt.images.unpack.paths import lexical_parts
from podrt.images.unpack.problems import CorruptLayer, UnsafeLayer
from podrt.images.unpack.stream import DECODE_ERRORS, Digesting, compression, decompressed
from podrt.images.unpack.tree import Unpacker

__all__ = ["CorruptLayer", "LayerStats", "UnsafeLayer", "compression", "lexical_parts", "unpack_layer"]


@attrs.frozen
class LayerStats:
    uncompressed_size: int  # bytes of the tar stream, padding included
    entries: int
    diff_id: str  # "sha256:<hex>" of the uncompressed tar stream


def unpack_layer(stream: BinaryIO, target: Path, *, media_type: str) -> LayerStats:
    """Unpack the layer read from `stream` into the empty directory `target`.

    Blocking: run it in a thread. On any error `target` holds a partial
    layer and the caller must delete it (the store unpacks into a temp dir
    and renames it into place only on success). Raises UnsafeLayer for
    entries podrt refuses, CorruptLayer for an unreadable stream, OSError
    for the stream's or the filesystem's own errors. The caller checks the
    returned diff_id against the image config's rootfs.diff_ids.
    """
    entries = 0
    try:
        with contextlib.ExitStack() as stack:
            reader = Digesting(stack.enter_context(decompressed(stream, media_type)))
            unpacker = stack.enter_context(Unpacker(target))
            tar = stack.enter_context(
                tarfile.open(fileobj=reader, mode="r|", encoding="utf-8", errors="surrogateescape")  # type: ignore
            )
            while (member := tar.next()) is not None:
                unpacker.apply(member, tar)
                tar.members.clear()  # 'r|' would keep every header it has read
                entries += 1
            unpacker.finish()
            reader.drain()  # tar stops at its end marker; the diff_id covers the padding after it
    except DECODE_ERRORS as exc:
        raise CorruptLayer(f"layer stream ({media_type}): {exc}") from exc
    return LayerStats(uncompressed_size=reader.size, entries=entries, diff_id=f"sha256:{reader.hexdigest()}")
