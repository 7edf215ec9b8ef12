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
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Protocol

import attrs
import zstandard

from podrt.logutil import RateLimited

log = logging.getLogger(__name__)
_noisy = RateLimited(log)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# overlayfs' own control xattrs: a layer says "opaque" or "deleted" with
# whiteout files, never by setting these (redirect/metacopy would let it
# reach into other layers).
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_PAX_XATTR = "SCHILY.xattr."

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_NS = 1_000_000_000
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NODE_TYPES = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO}
# Media type suffix -> compression it declares (the bytes still decide, see _decompressed).
_DECLARED = (("+gzip", "gzip"), (".tar.gzip", "gzip"), ("+zstd", "zstd"), (".tar", "tar"))


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class UnsafeLayer(ValueError):
    """An entry would land outside the target, or the layer is one podrt will not apply."""


class CorruptLayer(ValueError):
    """The stream is not a readable (compressed) tar."""


@attrs.frozen
class LayerStats:
    uncompressed_size: int  # bytes of the tar stream, padding included
    entries: int
    diff_id: str  # "sha256:<hex>" of the uncompressed tar stream


_DECODE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


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
            reader = _Digesting(stack.enter_context(_decompressed(stream, media_type)))
            unpacker = stack.enter_context(_Unpacker(target))
            tar = stack.enter_context(
                tarfile.open(fileobj=reader, mode="r|", encoding="utf-8", errors="surrogateescape")  # type: ignore
            )
            while (member := tar.next()) is not None:
                unpacker.apply(member, tar)
                tar.members.clear()  # 'r|' would keep every header it has read
                entries += 1
            unpacker.finish()
            reader.drain()  # tar stops at its end marker; the diff_id covers the padding after it
    except _DECODE_ERRORS as exc:
        raise CorruptLayer(f"layer stream ({media_type}): {exc}") from exc
    return LayerStats(uncompressed_size=reader.size, entries=entries, diff_id=f"sha256:{reader.hexdigest()}")


# --- the stream -------------------------------------------------------------


class _Prefixed:
    """`stream` with the bytes already read from its front put back."""

    def __init__(self, head: bytes, stream: _Reader) -> None:
        self._head, self._stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size < 0:
            out, self._head = self._head + self._stream.read(), b""
            return out
        out, self._head = self._head[:size], self._head[size:]
        return out


class _Digesting:
    """Counts and hashes every byte read through it."""

    def __init__(self, stream: _Reader) -> None:
        self._stream = stream
        self._sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
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
def _decompressed(stream: _Reader, media_type: str) -> Iterator[_Reader]:
    """The plain tar stream. The magic bytes decide, as in containerd: a
    registry's media type is sometimes wrong, and the diff_id check catches
    any stream that is not the layer."""
    declared = _declared_compression(media_type)
    head = b""
    while len(head) < 4 and (more := stream.read(4 - len(head))):  # a pipe may hand over fewer bytes
        head += more
    sniffed = compression(head)
    if declared is not None and declared != sniffed:
        _noisy.warning("layer media type %s says %s but its bytes are %s", media_type, declared, sniffed)
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


# --- names ------------------------------------------------------------------


def lexical_parts(name: str, base: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """`name` (below `base`) as path components: '' and '.' dropped, '..'
    resolved by text alone; None when it would climb above the root."""
    parts = list(base)
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
        elif parts:
            parts.pop()
        else:
            return None
    return tuple(parts)


def _parts(name: str, entry: str) -> tuple[str, ...]:
    """`name` as path components below the root: a leading '/' and './' are
    dropped (as docker does), and it may not climb out of the root."""
    parts = lexical_parts(name)
    if parts is None:
        raise UnsafeLayer(f"layer entry {entry!r}: {name!r} escapes the layer root")
    return parts


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """The exact PAX mtime when there is one (tarfile rounds it to a float)."""
    try:
        seconds = Decimal(str(member.pax_headers.get("mtime", member.mtime)))
    except (ArithmeticError, ValueError):
        return 0
    if not seconds.is_finite():  # "1e999985" would make int() build a huge number, holding the GIL for ages
        return 0
    seconds = max(Decimal(_NS_MIN // _NS), min(seconds, Decimal(_NS_MAX // _NS)))  # clamp before scaling
    return max(_NS_MIN, min(int(seconds * _NS), _NS_MAX))


def _xattrs(member: tarfile.TarInfo) -> Iterator[tuple[str, bytes]]:
    for key, value in member.pax_headers.items():
        if key.startswith(_PAX_XATTR):
            yield key[len(_PAX_XATTR) :], value.encode("utf-8", "surrogateescape")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# --- the tree ---------------------------------------------------------------


class _Unpacker:
    """Writes entries below `target`; directory modes and mtimes wait for finish()."""

    def __init__(self, target: Path) -> None:
        self._root = os.open(target, _DIR_FLAGS)
        if os.listdir(self._root):
            os.close(self._root)
            raise ValueError(f"{target} is not empty: a layer is unpacked alone")
        self._as_root = os.geteuid() == 0  # otherwise ownership stays ours, as with tar
        self._dirs: dict[str, tuple[int, int]] = {}  # path -> (mode, mtime ns), set at the end

    def __enter__(self) -> _Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._root)

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = _parts(member.name, member.name)
        if not parts:
            self._root_entry(member)
        elif parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, member)
        else:
            self._entry(parts, member, tar)

    def _entry(self, parts: tuple[str, ...], member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        path, base = "/".join(parts), parts[-1]
        with self._dir(parts[:-1], member.name, create=True) as parent:
            if member.isdir():
                self._mkdir(parent, base, path, member)
            elif member.isreg():
                self._file(parent, base, path, member, tar)
            elif member.islnk():
                self._hardlink(parent, base, path, member)
            elif member.issym():
                self._replace(parent, base, path)
                os.symlink(member.linkname, base, dir_fd=parent)
                self._finish_node(parent, base, member, chmod=False)
            elif member.type in _NODE_TYPES:
                self._replace(parent, base, path)
                device = 0 if member.isfifo() else os.makedev(member.devmajor, member.devminor)
                os.mknod(base, _NODE_TYPES[member.type] | 0o600, device, dir_fd=parent)
                self._finish_node(parent, base, member, chmod=True)
            else:
                raise UnsafeLayer(f"layer entry {member.name!r} has the unsupported tar type {member.type!r}")

    def finish(self) -> None:
        """Directory modes and mtimes, deepest first: creating entries changed
        the mtimes, and a read-only mode set early would have stopped us."""
        for path in sorted(self._dirs, key=lambda p: p.count("/") + bool(p), reverse=True):
            mode, mtime = self._dirs[path]
            with self._dir(tuple(path.split("/")) if path else (), path, create=False) as fd:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime, mtime))

    # entry kinds

    def _root_entry(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise UnsafeLayer(f"layer entry {member.name!r} names the layer root but is not a directory")
        self._own(self._root, member)
        self._set_xattrs(self._root, member)
        self._dirs[""] = (member.mode & 0o7777, _mtime_ns(member))

    def _whiteout(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        base = parts[-1]
        hidden = base[len(WHITEOUT_PREFIX) :]
        if base != OPAQUE_MARKER and (hidden in ("", ".", "..") or hidden.startswith(WHITEOUT_PREFIX)):
            raise UnsafeLayer(f"layer entry {member.name!r} is a whiteout podrt does not know")
        with self._dir(parts[:-1], member.name, create=True) as parent:
            if base == OPAQUE_MARKER:
                os.setxattr(parent, OPAQUE_XATTR, b"y")
            else:
                self._hide(parent, hidden, member)

    def _hide(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        """A whiteout hides the lower layers' `name`, never this layer's own."""
        st = _lstat(parent, name)
        if st is None:
            os.mknod(name, stat.S_IFCHR, 0, dir_fd=parent)
            self._chown_at(parent, name, member)
        elif stat.S_ISDIR(st.st_mode):  # this layer's directory replaces the lower one: no merging
            with self._opened(parent, name) as fd:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        # else this layer's own entry hides the lower one already

    def _mkdir(self, parent: int, base: str, path: str, member: tarfile.TarInfo) -> None:
        old = self._replace(parent, base, path, keep_dir=True)
        if old is None or not stat.S_ISDIR(old.st_mode):
            os.mkdir(base, 0o700, dir_fd=parent)
        with self._opened(parent, base) as fd:
            self._own(fd, member)
            self._set_xattrs(fd, member)
            if old is not None and _is_whiteout(old):  # whiteout then directory: it replaces the lower one
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        self._dirs[path] = (member.mode & 0o7777, _mtime_ns(member))

    def _file(self, parent: int, base: str, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self._replace(parent, base, path)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has a body
        with os.fdopen(os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent), "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
            out.flush()
            fd = out.fileno()
            self._own(fd, member)  # chown before chmod: chown clears setuid/setgid
            os.fchmod(fd, member.mode & 0o7777)
            self._set_xattrs(fd, member)  # after chown too: it clears security.capability
            mtime = _mtime_ns(member)
            os.utime(fd, ns=(mtime, mtime))

    def _hardlink(self, parent: int, base: str, path: str, member: tarfile.TarInfo) -> None:
        """A link to an earlier entry: the target started empty, so any
        non-directory there came from this layer (whiteouts aside)."""
        target = _parts(member.linkname, member.name)
        with self._dir(target[:-1], member.name, create=False) as source_dir:
            source = _lstat(source_dir, target[-1]) if target else None
            if source is None or stat.S_ISDIR(source.st_mode) or _is_whiteout(source):
                raise UnsafeLayer(
                    f"layer entry {member.name!r} is a hard link to {member.linkname!r}, "
                    "which is not an earlier file of this layer"
                )
            if "/".join(target) == path:
                return  # a link to itself: it is there already
            self._replace(parent, base, path)
            os.link(target[-1], base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)

    def _finish_node(self, parent: int, base: str, member: tarfile.TarInfo, *, chmod: bool) -> None:
        """Metadata of a symlink, device or fifo, none of which we open."""
        self._chown_at(parent, base, member)
        if chmod:
            os.chmod(base, member.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
        self._set_xattrs(f"/proc/self/fd/{parent}/{base}", member)
        mtime = _mtime_ns(member)
        os.utime(base, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    # helpers

    def _replace(self, parent: int, base: str, path: str, *, keep_dir: bool = False) -> os.stat_result | None:
        """Remove what an earlier entry put at `base` (tar semantics), never
        following a symlink; a directory stays when `keep_dir`. Returns its stat."""
        old = _lstat(parent, base)
        if old is None or (keep_dir and stat.S_ISDIR(old.st_mode)):
            return old
        if stat.S_ISDIR(old.st_mode):
            shutil.rmtree(base, dir_fd=parent)
            prefix = path + "/"
            self._dirs = {p: v for p, v in self._dirs.items() if p != path and not p.startswith(prefix)}
        else:
            os.unlink(base, dir_fd=parent)
        return old

    @contextlib.contextmanager
    def _dir(self, parts: tuple[str, ...], entry: str, *, create: bool) -> Iterator[int]:
        """An fd of the directory `parts` below the root, opened one component
        at a time without following symlinks; missing ones made when `create`."""
        fd = os.dup(self._root)
        try:
            for depth, part in enumerate(parts, 1):
                child = self._subdir(fd, part, "/".join(parts[:depth]), entry, create)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _subdir(self, parent: int, part: str, path: str, entry: str, create: bool) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise UnsafeLayer(f"layer entry {entry!r} needs {path!r}, which is not there") from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = _lstat(parent, part)
            what = "a symlink" if st is not None and stat.S_ISLNK(st.st_mode) else "not a directory"
            raise UnsafeLayer(f"layer entry {entry!r} goes through {path!r}, which is {what}") from None
        os.mkdir(part, 0o700, dir_fd=parent)  # an implicit parent, as docker makes them
        fd = os.open(part, _DIR_FLAGS, dir_fd=parent)
        os.fchmod(fd, 0o755)
        return fd

    @contextlib.contextmanager
    def _opened(self, parent: int, base: str) -> Iterator[int]:
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            yield fd
        finally:
            os.close(fd)

    def _own(self, fd: int, member: tarfile.TarInfo) -> None:
        if self._as_root:
            os.fchown(fd, member.uid, member.gid)

    def _chown_at(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        if self._as_root:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)

    def _set_xattrs(self, where: int | str, member: tarfile.TarInfo) -> None:
        """`where` is an fd, or a /proc/self/fd/<dir>/<name> path not followed
        at its end (os.setxattr takes no dir_fd)."""
        nofollow = {} if isinstance(where, int) else {"follow_symlinks": False}
        for name, value in _xattrs(member):
            if name.startswith(_OVERLAY_XATTRS):
                _noisy.warning("layer entry %r: xattr %s dropped (overlayfs' own)", member.name, name)
                continue
            try:
                os.setxattr(where, name, value, **nofollow)  # type: ignore[arg-type]
            except OSError as exc:
                # EPERM: the kernel keeps user.* for regular files and directories only
                if exc.errno != errno.EOPNOTSUPP and not (exc.errno == errno.EPERM and name.startswith("user.")):
                    raise
                _noisy.warning("layer entry %r: xattr %s skipped: %s", member.name, name, exc.strerror)
