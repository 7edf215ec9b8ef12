"""An entry's metadata as the layer gives it: ownership (only when unpacking
as root; otherwise it stays ours, as with tar), modes, exact times and
xattrs, minus overlayfs' own control xattrs."""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Iterator
from decimal import Decimal

import attrs

from podrt.images.unpack.problems import noisy

# overlayfs' own control xattrs: a layer says "opaque" or "deleted" with
# whiteout files, never by setting these (redirect/metacopy would let it
# reach into other layers).
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_PAX_XATTR = "SCHILY.xattr."
_NS = 1_000_000_000
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1


def mtime_ns(member: tarfile.TarInfo) -> int:
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


@attrs.frozen
class Metadata:
    as_root: bool  # whether entries get the layer's owners

    def own(self, fd: int, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.fchown(fd, member.uid, member.gid)

    def chown_at(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)

    def set_xattrs(self, where: int | str, member: tarfile.TarInfo) -> None:
        """`where` is an fd, or a /proc/self/fd/<dir>/<name> path not followed
        at its end (os.setxattr takes no dir_fd)."""
        nofollow = {} if isinstance(where, int) else {"follow_symlinks": False}
        for name, value in _xattrs(member):
            if name.startswith(_OVERLAY_XATTRS):
                noisy.warning("layer entry %r: xattr %s dropped (overlayfs' own)", member.name, name)
                continue
            try:
                os.setxattr(where, name, value, **nofollow)
            except OSError as exc:
                # EPERM: the kernel keeps user.* for regular files and directories only
                if exc.errno != errno.EOPNOTSUPP and not (exc.errno == errno.EPERM and name.startswith("user.")):
                    raise
                noisy.warning("layer entry %r: xattr %s skipped: %s", member.name, name, exc.strerror)

    def finish_node(self, parent: int, base: str, member: tarfile.TarInfo, *, chmod: bool) -> None:
        """Metadata of a symlink, device or fifo, none of which we open."""
        self.chown_at(parent, base, member)
        if chmod:
            os.chmod(base, member.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
        self.set_xattrs(f"/proc/self/fd/{parent}/{base}", member)
        mtime = mtime_ns(member)
        os.utime(base, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
