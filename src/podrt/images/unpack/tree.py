"""Writing a layer's entries below an empty directory by hand: each created
with O_EXCL / mknod / symlink / link relative to its parent's fd, so no path
the kernel resolves ever goes through a symlink from the layer. Directory
modes and times wait until every entry is in (they would stop or change
under later entries)."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path

from podrt.images.unpack import whiteouts
from podrt.images.unpack.meta import Metadata, mtime_ns
from podrt.images.unpack.paths import DIR_FLAGS, entry_parts, lstat_at, open_dir, opened
from podrt.images.unpack.problems import UnsafeLayer
from podrt.images.unpack.stream import CHUNK

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NODE_TYPES = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO}


class Unpacker:
    """Writes entries below `target`; directory modes and mtimes wait for finish()."""

    def __init__(self, target: Path) -> None:
        self._root = os.open(target, DIR_FLAGS)
        if os.listdir(self._root):
            os.close(self._root)
            raise ValueError(f"{target} is not empty: a layer is unpacked alone")
        self._meta = Metadata(as_root=os.geteuid() == 0)  # otherwise ownership stays ours, as with tar
        self._dirs: dict[str, tuple[int, int]] = {}  # path -> (mode, mtime ns), set at the end

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._root)

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = entry_parts(member.name, member.name)
        if not parts:
            self._root_entry(member)
        elif parts[-1].startswith(whiteouts.WHITEOUT_PREFIX):
            whiteouts.apply(self._root, parts, member, self._meta)
        else:
            self._entry(parts, member, tar)

    def _entry(self, parts: tuple[str, ...], member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        path, base = "/".join(parts), parts[-1]
        with open_dir(self._root, parts[:-1], member.name, create=True) as parent:
            if member.isdir():
                self._mkdir(parent, base, path, member)
            elif member.isreg():
                self._file(parent, base, path, member, tar)
            elif member.islnk():
                self._hardlink(parent, base, path, member)
            elif member.issym():
                self._replace(parent, base, path)
                os.symlink(member.linkname, base, dir_fd=parent)
                self._meta.finish_node(parent, base, member, chmod=False)
            elif member.type in _NODE_TYPES:
                self._replace(parent, base, path)
                device = 0 if member.isfifo() else os.makedev(member.devmajor, member.devminor)
                os.mknod(base, _NODE_TYPES[member.type] | 0o600, device, dir_fd=parent)
                self._meta.finish_node(parent, base, member, chmod=True)
            else:
                raise UnsafeLayer(f"layer entry {member.name!r} has the unsupported tar type {member.type!r}")

    def finish(self) -> None:
        """Directory modes and mtimes, deepest first: creating entries changed
        the mtimes, and a read-only mode set early would have stopped us."""
        for path in sorted(self._dirs, key=lambda p: p.count("/") + bool(p), reverse=True):
            mode, mtime = self._dirs[path]
            with open_dir(self._root, tuple(path.split("/")) if path else (), path, create=False) as fd:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime, mtime))

    # entry kinds

    def _root_entry(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise UnsafeLayer(f"layer entry {member.name!r} names the layer root but is not a directory")
        self._meta.own(self._root, member)
        self._meta.set_xattrs(self._root, member)
        self._dirs[""] = (member.mode & 0o7777, mtime_ns(member))

    def _mkdir(self, parent: int, base: str, path: str, member: tarfile.TarInfo) -> None:
        old = self._replace(parent, base, path, keep_dir=True)
        if old is None or not stat.S_ISDIR(old.st_mode):
            os.mkdir(base, 0o700, dir_fd=parent)
        with opened(parent, base) as fd:
            self._meta.own(fd, member)
            self._meta.set_xattrs(fd, member)
            if old is not None and whiteouts.is_whiteout(old):  # whiteout then directory: it replaces the lower one
                os.setxattr(fd, whiteouts.OPAQUE_XATTR, b"y")
        self._dirs[path] = (member.mode & 0o7777, mtime_ns(member))

    def _file(self, parent: int, base: str, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self._replace(parent, base, path)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has a body
        with os.fdopen(os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent), "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
            out.flush()
            fd = out.fileno()
            self._meta.own(fd, member)  # chown before chmod: chown clears setuid/setgid
            os.fchmod(fd, member.mode & 0o7777)
            self._meta.set_xattrs(fd, member)  # after chown too: it clears security.capability
            mtime = mtime_ns(member)
            os.utime(fd, ns=(mtime, mtime))

    def _hardlink(self, parent: int, base: str, path: str, member: tarfile.TarInfo) -> None:
        """A link to an earlier entry: the target started empty, so any
        non-directory there came from this layer (whiteouts aside)."""
        target = entry_parts(member.linkname, member.name)
        with open_dir(self._root, target[:-1], member.name, create=False) as source_dir:
            source = lstat_at(source_dir, target[-1]) if target else None
            if source is None or stat.S_ISDIR(source.st_mode) or whiteouts.is_whiteout(source):
                raise UnsafeLayer(
                    f"layer entry {member.name!r} is a hard link to {member.linkname!r}, "
                    "which is not an earlier file of this layer"
                )
            if "/".join(target) == path:
                return  # a link to itself: it is there already
            self._replace(parent, base, path)
            os.link(target[-1], base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)

    def _replace(self, parent: int, base: str, path: str, *, keep_dir: bool = False) -> os.stat_result | None:
        """Remove what an earlier entry put at `base` (tar semantics), never
        following a symlink; a directory stays when `keep_dir`. Returns its stat."""
        old = lstat_at(parent, base)
        if old is None or (keep_dir and stat.S_ISDIR(old.st_mode)):
            return old
        if stat.S_ISDIR(old.st_mode):
            shutil.rmtree(base, dir_fd=parent)
            prefix = path + "/"
            self._dirs = {p: v for p, v in self._dirs.items() if p != path and not p.startswith(prefix)}
        else:
            os.unlink(base, dir_fd=parent)
        return old
