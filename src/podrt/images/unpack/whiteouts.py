"""A layer's whiteouts, written as overlayfs reads them: a 0/0 character
device hides a lower layer's entry, `trusted.overlay.opaque=y` on a
directory hides everything the lower layers have in it. Nothing is deleted:
the layer is unpacked alone and stacked at container start."""

from __future__ import annotations

import os
import stat
import tarfile

from podrt.images.unpack.meta import Metadata
from podrt.images.unpack.paths import lstat_at, open_dir, opened
from podrt.images.unpack.problems import UnsafeLayer

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def apply(root: int, parts: tuple[str, ...], member: tarfile.TarInfo, meta: Metadata) -> None:
    """The whiteout entry `parts` (its last part starts with .wh.)."""
    base = parts[-1]
    hidden = base[len(WHITEOUT_PREFIX) :]
    if base != OPAQUE_MARKER and (hidden in ("", ".", "..") or hidden.startswith(WHITEOUT_PREFIX)):
        raise UnsafeLayer(f"layer entry {member.name!r} is a whiteout podrt does not know")
    with open_dir(root, parts[:-1], member.name, create=True) as parent:
        if base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
        else:
            _hide(parent, hidden, member, meta)


def _hide(parent: int, name: str, member: tarfile.TarInfo, meta: Metadata) -> None:
    """A whiteout hides the lower layers' `name`, never this layer's own."""
    st = lstat_at(parent, name)
    if st is None:
        os.mknod(name, stat.S_IFCHR, 0, dir_fd=parent)
        meta.chown_at(parent, name, member)
    elif stat.S_ISDIR(st.st_mode):  # this layer's directory replaces the lower one: no merging
        with opened(parent, name) as fd:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
    # else this layer's own entry hides the lower one already
