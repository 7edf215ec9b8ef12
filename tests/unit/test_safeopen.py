"""Files of an image's rootfs are read as inside it: its symlinks, absolute
or climbing, never reach the host's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podrt.host import safeopen


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "real-etc").mkdir(parents=True)
    (root / "real-etc" / "passwd").write_text("image:x:1:1::/:/bin/sh\n")
    (tmp_path / "host-secret").write_text("host")
    return root


@pytest.mark.parametrize("walk", [False, True], ids=["openat2", "no-openat2"])
def test_links_resolve_inside_the_root(rootfs: Path, monkeypatch: pytest.MonkeyPatch, walk: bool) -> None:
    if walk:  # as on a kernel without openat2: every symlink is refused
        monkeypatch.setattr(safeopen, "SYS_OPENAT2", -1)
        monkeypatch.setattr(safeopen, "_openat2", lambda fd, path: safeopen._walk_no_symlinks(fd, path))
    (rootfs / "etc").symlink_to("/real-etc")  # absolute: the image's /real-etc, not the host's
    (rootfs / "up").symlink_to("../../../../../../host-secret")
    assert b"image:x:1:1" in safeopen.read_in_root(str(rootfs), "/real-etc/passwd", 100)
    if not walk:
        assert b"image:x:1:1" in safeopen.read_in_root(str(rootfs), "/etc/passwd", 100)
    with pytest.raises(OSError):  # climbs out: stays in the root, where there is no such file
        safeopen.read_in_root(str(rootfs), "/up", 100)
    with pytest.raises(OSError):
        safeopen.read_in_root(str(rootfs), "/../host-secret", 100)


def test_only_regular_files(rootfs: Path) -> None:
    os.mkfifo(rootfs / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        safeopen.read_in_root(str(rootfs), "/fifo", 100)
