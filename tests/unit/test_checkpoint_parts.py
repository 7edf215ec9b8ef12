"""The host-free parts of CheckpointContainer: what an upper dir says was
changed and deleted, the location's checks, Go's time format, CRIU's messages."""

from __future__ import annotations

import json
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from podrt.container import checkpoint
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.host.overlay import upper_changes
from podrt.oci.criu import check_message


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


@pytest.mark.skipif(os.geteuid() != 0, reason="a whiteout is a character device: mknod needs root")
def test_upper_changes_whiteouts_and_mount_points(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("mount point made by runc")
    (tmp_path / "etc" / "new.conf").write_text("x")
    _whiteout(tmp_path / "etc" / "group")
    (tmp_path / "dev" / "pts").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("y")
    (tmp_path / "link").symlink_to("/nowhere")
    changed, deleted = upper_changes(tmp_path, ["/dev", "/etc/hosts"])
    assert sorted(changed) == ["data", "data/f", "etc", "etc/new.conf", "link"]
    assert changed.index("data") < changed.index("data/f")  # a dir before what it holds
    assert deleted == ["/etc/group"]


def test_location_checks(tmp_path: Path) -> None:
    for bad in ("", "rel/ckpt.tar", str(tmp_path)):
        with pytest.raises(InvalidArgument, match="^location: "):
            checkpoint.checked_location(bad)
    with pytest.raises(FailedPrecondition, match="does not exist"):
        checkpoint.checked_location(str(tmp_path / "missing" / "ckpt.tar"))
    assert checkpoint.checked_location(f"{tmp_path}/x/../ckpt.tar") == tmp_path / "ckpt.tar"


def test_go_time() -> None:
    assert checkpoint._go_time(0) == "0001-01-01T00:00:00Z"
    assert checkpoint._go_time(1_700_000_000_000_000_123) == "2023-11-14T22:13:20.000000123Z"


def test_criu_check_message_keeps_the_error_lines() -> None:
    err = ("Warn (criu/kerndat.c:1): something\nError (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
           "Error (criu/crtools.c:260): Could not initialize kernel features detection.\n")
    assert check_message("", err) == ("Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable; "
                                      "Error (criu/crtools.c:260): Could not initialize kernel features detection.")
    assert check_message("odd output\n", "") == "odd output"


def test_archive_is_whole_or_absent(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "checkpoint").mkdir(parents=True)
    (work / "checkpoint" / "inventory.img").write_bytes(b"i" * 5000)
    (work / "config.dump").write_text(json.dumps({"id": "x"}))
    out.mkdir()
    target = out / "ckpt.tar"
    target.write_text("an older one")
    checkpoint._write_archive(work, target, threading.Event())
    with tarfile.open(target) as tar:
        assert sorted(tar.getnames()) == ["checkpoint", "checkpoint/inventory.img", "config.dump"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    stop = threading.Event()
    stop.set()
    with pytest.raises(checkpoint.Stopped):
        checkpoint._write_archive(work, out / "other.tar", stop)
    assert [p.name for p in out.iterdir()] == ["ckpt.tar"]  # no partial file beside it
