"""Unpacking one image layer into an overlayfs lower directory (podrt.images.unpack).

Layers are built here with tarfile; the trees they give are compared field by
field, and once against GNU tar's extraction of the same layer.
"""

from __future__ import annotations

import collections
import errno
import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from podrt.images.unpack import CorruptLayer, LayerStats, UnsafeLayer, unpack_layer

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: mknod of devices, chown, trusted.* xattrs")

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MTIME = 1_700_000_000

Entry = tuple[tarfile.TarInfo, bytes]


# --- building layers ---------------------------------------------------------


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    linkname: str = "",
    uid: int = 0,
    gid: int = 0,
    mtime: int | str = MTIME,
    xattrs: dict[str, bytes] | None = None,
    dev: tuple[int, int] = (0, 0),
) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, linkname, uid, gid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.devmajor, info.devminor = dev
    pax = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in (xattrs or {}).items()}
    if isinstance(mtime, str):  # exact PAX time, as tarfile itself would round it
        pax["mtime"] = mtime
        info.mtime = int(float(mtime))
    else:
        info.mtime = mtime
    info.pax_headers = pax
    return info, data


def file(name: str, data: bytes = b"", **kw: Any) -> Entry:
    return entry(name, tarfile.REGTYPE, data, **kw)


def directory(name: str, **kw: Any) -> Entry:
    kw.setdefault("mode", 0o755)
    return entry(name, tarfile.DIRTYPE, **kw)


def symlink(name: str, target: str, **kw: Any) -> Entry:
    return entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)


def hardlink(name: str, target: str, **kw: Any) -> Entry:
    return entry(name, tarfile.LNKTYPE, linkname=target, **kw)


def node(name: str, kind: bytes, major: int = 0, minor: int = 0, **kw: Any) -> Entry:
    return entry(name, kind, dev=(major, minor), **kw)


def layer(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def unpack(tmp_path: Path, blob: bytes, media_type: str = OCI_TAR, name: str = "layer") -> tuple[Path, LayerStats]:
    target = tmp_path / name
    target.mkdir()
    return target, unpack_layer(io.BytesIO(blob), target, media_type=media_type)


class OneWay:
    """A stream that can only be read front to back, like a registry download."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.largest_read = 0

    def read(self, size: int = -1) -> bytes:
        assert size > 0, "the unpacker must read in chunks"
        self.largest_read = max(self.largest_read, size)
        return self._buf.read(size)


# --- reading trees back --------------------------------------------------------


def xattrs_of(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}


def describe(path: Path) -> dict[str, Any]:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    out: dict[str, Any] = {
        "type": stat.filemode(st.st_mode)[0],
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "xattrs": xattrs_of(path),
    }
    if kind != stat.S_IFLNK:  # a symlink's mode means nothing on Linux
        out["mode"] = oct(stat.S_IMODE(st.st_mode))
    if kind == stat.S_IFREG:
        out["size"] = st.st_size
        out["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    if kind == stat.S_IFLNK:
        out["link"] = os.readlink(path)
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        out["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return out


def tree(root: Path) -> tuple[dict[str, dict[str, Any]], set[frozenset[str]]]:
    """Every path below root (root as '.') described, and the hard-link groups."""
    paths = [root]
    for dirpath, dirnames, filenames in os.walk(root):  # never follows symlinks
        paths += [Path(dirpath, n) for n in dirnames + filenames]
    described, by_inode = {}, collections.defaultdict(set)
    for path in paths:
        rel = str(path.relative_to(root))
        described[rel] = describe(path)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            by_inode[st.st_ino].add(rel)
    return described, {frozenset(group) for group in by_inode.values()}


# --- kinds of entries ----------------------------------------------------------


def test_files_dirs_symlinks_and_hardlinks(tmp_path: Path) -> None:
    blob = layer(
        directory("usr/"),
        directory("usr/bin/"),
        file("usr/bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755),
        hardlink("usr/bin/tool2", "usr/bin/tool"),
        symlink("bin", "usr/bin"),
        symlink("abs", "/etc/os-release"),
        symlink("dangling", "../../nowhere"),
        file("deep/implicit/parents/f", b"x"),
    )
    root, stats = unpack(tmp_path, blob)

    assert (root / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.stat(root / "usr/bin/tool").st_ino == os.stat(root / "usr/bin/tool2").st_ino
    assert os.stat(root / "usr/bin/tool").st_nlink == 2
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "abs") == "/etc/os-release"  # as given: it resolves inside the container
    assert os.readlink(root / "dangling") == "../../nowhere"
    assert (root / "deep/implicit/parents/f").read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(root / "deep/implicit").st_mode) == 0o755
    assert stats.entries == 8
    assert stats.uncompressed_size == len(blob)
    assert stats.diff_id == "sha256:" + hashlib.sha256(blob).hexdigest()


def test_fifo(tmp_path: Path) -> None:
    root, _ = unpack(tmp_path, layer(node("run/fifo", tarfile.FIFOTYPE, mode=0o620)))
    st = os.lstat(root / "run/fifo")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o620


@needs_root
def test_char_and_block_devices(tmp_path: Path) -> None:
    blob = layer(
        node("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666),
        node("dev/sda", tarfile.BLKTYPE, 8, 0, mode=0o660, gid=6),
    )
    root, _ = unpack(tmp_path, blob)
    null, sda = os.lstat(root / "dev/null"), os.lstat(root / "dev/sda")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(sda.st_mode) and (os.major(sda.st_rdev), os.minor(sda.st_rdev)) == (8, 0)
    assert (stat.S_IMODE(sda.st_mode), sda.st_gid) == (0o660, 6)


def test_modes_with_setuid_setgid_sticky(tmp_path: Path) -> None:
    blob = layer(
        file("su", b"x", mode=0o4755),
        file("wall", b"x", mode=0o2711),
        file("secret", b"x", mode=0o000),
        directory("tmp/", mode=0o1777),
        directory("shared/", mode=0o2775),
        directory("ro/", mode=0o555),
        file("ro/inside", b"written after its read-only parent"),
    )
    root, _ = unpack(tmp_path, blob)
    modes = {n: stat.S_IMODE(os.lstat(root / n).st_mode) for n in ("su", "wall", "secret", "tmp", "shared", "ro")}
    assert modes == {"su": 0o4755, "wall": 0o2711, "secret": 0, "tmp": 0o1777, "shared": 0o2775, "ro": 0o555}
    assert (root / "ro/inside").read_bytes() == b"written after its read-only parent"


@needs_root
def test_ownership_is_numeric_and_not_followed(tmp_path: Path) -> None:
    blob = layer(
        directory("home/", uid=0, gid=0),
        directory("home/u/", uid=1234, gid=4321, mode=0o700),
        file("home/u/f", b"x", uid=1234, gid=4321, mode=0o4750),
        symlink("home/u/link", "/etc/passwd", uid=1234, gid=4321),
        node("home/u/fifo", tarfile.FIFOTYPE, uid=1234, gid=4321),
    )
    root, _ = unpack(tmp_path, blob)
    for name in ("home/u", "home/u/f", "home/u/link", "home/u/fifo"):
        st = os.lstat(root / name)
        assert (st.st_uid, st.st_gid) == (1234, 4321), name
    assert stat.S_IMODE(os.lstat(root / "home/u/f").st_mode) == 0o4750  # chown did not clear setuid
    assert os.stat("/etc/passwd").st_uid == 0


def test_mtimes_of_files_dirs_and_symlinks(tmp_path: Path) -> None:
    blob = layer(
        directory("d/", mtime=1_000_000_000),
        file("d/f", b"x", mtime=1_100_000_000),
        directory("d/sub/", mtime=1_200_000_000),
        file("d/sub/g", b"y", mtime="1300000000.123456789"),
        symlink("d/l", "f", mtime=1_400_000_000),
        directory("./", mtime=1_500_000_000),
    )
    root, _ = unpack(tmp_path, blob)
    ns = {n: os.lstat(root / n).st_mtime_ns for n in ("d", "d/f", "d/sub", "d/sub/g", "d/l", ".")}
    assert ns == {
        "d": 1_000_000_000 * 10**9,  # set after its children were made
        "d/f": 1_100_000_000 * 10**9,
        "d/sub": 1_200_000_000 * 10**9,
        "d/sub/g": 1_300_000_000_123_456_789,  # PAX nanoseconds kept exactly
        "d/l": 1_400_000_000 * 10**9,
        ".": 1_500_000_000 * 10**9,
    }


def test_user_xattrs_on_files_and_dirs(tmp_path: Path) -> None:
    blob = layer(
        directory("d/", xattrs={"user.dir": b"on a dir"}),
        file("d/f", b"x", xattrs={"user.text": b"hello", "user.binary": b"\x00\xff\x01"}),
        symlink("d/l", "f", xattrs={"user.refused": b"the kernel keeps user.* off symlinks"}),
    )
    root, _ = unpack(tmp_path, blob)
    assert xattrs_of(root / "d") == {"user.dir": b"on a dir"}
    assert xattrs_of(root / "d/f") == {"user.text": b"hello", "user.binary": b"\x00\xff\x01"}
    assert xattrs_of(root / "d/l") == {}


@needs_root
def test_trusted_xattrs_also_on_symlinks(tmp_path: Path) -> None:
    blob = layer(
        file("f", b"x", xattrs={"trusted.app": b"1"}),
        symlink("l", "f", xattrs={"trusted.app": b"2"}),
    )
    root, _ = unpack(tmp_path, blob)
    assert xattrs_of(root / "f") == {"trusted.app": b"1"}
    assert xattrs_of(root / "l") == {"trusted.app": b"2"}


def test_overlay_control_xattrs_from_the_layer_are_dropped(tmp_path: Path) -> None:
    blob = layer(
        directory("d/", xattrs={"trusted.overlay.redirect": b"/etc", "user.overlay.opaque": b"y", "user.kept": b"1"}),
    )
    root, _ = unpack(tmp_path, blob)
    assert xattrs_of(root / "d") == {"user.kept": b"1"}


def test_xattrs_the_filesystem_refuses_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.setxattr

    def setxattr(path: Any, name: str, value: bytes, *args: Any, **kw: Any) -> None:
        if name == "security.selinux":
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        real(path, name, value, *args, **kw)

    monkeypatch.setattr(os, "setxattr", setxattr)
    root, _ = unpack(tmp_path, layer(file("f", b"x", xattrs={"security.selinux": b"ctx\x00", "user.a": b"1"})))
    assert xattrs_of(root / "f") == {"user.a": b"1"}


# --- overlay whiteouts ---------------------------------------------------------


@needs_root
def test_whiteout_becomes_a_0_0_char_device(tmp_path: Path) -> None:
    root, stats = unpack(tmp_path, layer(directory("etc/"), file("etc/.wh.motd", uid=12, gid=34), file(".wh.opt")))
    for name in ("etc/motd", "opt"):
        st = os.lstat(root / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    motd = os.lstat(root / "etc/motd")
    assert (motd.st_uid, motd.st_gid) == (12, 34)
    assert not (root / "etc/.wh.motd").exists()
    assert stats.entries == 3


@needs_root
def test_opaque_marker_sets_the_overlay_xattr(tmp_path: Path) -> None:
    root, _ = unpack(tmp_path, layer(directory("var/"), file("var/.wh..wh..opq"), file("var/new", b"x")))
    assert os.getxattr(root / "var", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(root / "var")) == ["new"]


@needs_root
def test_whiteout_of_this_layers_own_entries(tmp_path: Path) -> None:
    """Only lower layers are hidden: this layer's entry stays, and a directory
    of this layer that replaces a deleted one must not merge with it."""
    blob = layer(
        file("kept", b"x"),
        file(".wh.kept"),
        file(".wh.was-deleted"),
        directory("was-deleted/"),
        directory("later-deleted/"),
        file(".wh.later-deleted"),
    )
    root, _ = unpack(tmp_path, blob)
    assert (root / "kept").read_bytes() == b"x"
    for name in ("was-deleted", "later-deleted"):
        assert (root / name).is_dir()
        assert os.getxattr(root / name, "trusted.overlay.opaque") == b"y"


@pytest.mark.parametrize("name", [".wh..wh.plnk", "d/.wh..wh.aufs", ".wh.", "d/.wh..", "d/.wh..."])
def test_unknown_whiteouts_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeLayer, match="whiteout"):
        unpack(tmp_path, layer(file(name)))


# --- compression ---------------------------------------------------------------


def _zstd_frames(plain: bytes) -> bytes:
    """Several frames and a skippable one, as zstd:chunked writes them."""
    cctx = zstandard.ZstdCompressor()
    half = len(plain) // 2
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    return cctx.compress(plain[:half]) + skippable + cctx.compress(plain[half:])


COMPRESSIONS = {
    "tar": (lambda b: b, OCI_TAR),
    "gzip": (gzip.compress, OCI_GZIP),
    "docker-gzip": (gzip.compress, DOCKER_GZIP),
    "zstd": (zstandard.ZstdCompressor().compress, OCI_ZSTD),
    "zstd-frames": (_zstd_frames, OCI_ZSTD),
    "gzip-declared-tar": (gzip.compress, OCI_TAR),  # the bytes decide
    "zstd-no-media-type": (zstandard.ZstdCompressor().compress, ""),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSIONS))
def test_every_compression_gives_the_same_tree_and_diff_id(tmp_path: Path, kind: str) -> None:
    plain = layer(
        directory("./", mtime=900_000_000),  # else the two roots' mtimes differ
        directory("a/", mtime=1_000_000_000),
        file("a/f", os.urandom(300_000), mode=0o640),
        hardlink("a/g", "a/f"),
        symlink("a/l", "f"),
        file("a/empty"),
    )
    compress, media_type = COMPRESSIONS[kind]
    expected_root, expected = unpack(tmp_path, plain, OCI_TAR, name="plain")
    root, stats = unpack(tmp_path, compress(plain), media_type)
    assert stats == expected
    assert stats.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert stats.uncompressed_size == len(plain)
    assert tree(root) == tree(expected_root)


def test_unsupported_media_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeLayer, match="not supported"):
        unpack(tmp_path, gzip.compress(layer(file("f"))), "application/vnd.oci.image.layer.v1.tar+gzip+encrypted")


@pytest.mark.parametrize(
    "blob",
    [gzip.compress(layer(file("f", os.urandom(50_000))))[:-2000], b"not a tar at all" * 100, b""],
    ids=["truncated-gzip", "garbage", "empty"],
)
def test_unreadable_streams_are_corrupt(tmp_path: Path, blob: bytes) -> None:
    with pytest.raises(CorruptLayer):
        unpack(tmp_path, blob)


def test_an_empty_layer(tmp_path: Path) -> None:
    blob = b"\0" * 1024  # what docker writes for a layer with nothing in it
    root, stats = unpack(tmp_path, blob)
    assert stats == LayerStats(1024, 0, "sha256:" + hashlib.sha256(blob).hexdigest())
    assert os.listdir(root) == []


def test_streams_a_layer_of_2000_files(tmp_path: Path) -> None:
    entries = [directory(f"d{i}/") for i in range(20)]
    entries += [file(f"d{i % 20}/f{i}", b"%d" % i) for i in range(2000)]
    plain = layer(*entries)
    target = tmp_path / "layer"
    target.mkdir()
    source = OneWay(gzip.compress(plain))
    stats = unpack_layer(source, target, media_type=OCI_GZIP)  # type: ignore[arg-type]
    assert stats.entries == 2020
    assert stats.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert sum(len(os.listdir(target / f"d{i}")) for i in range(20)) == 2000
    assert (target / "d7/f1987").read_bytes() == b"1987"
    assert source.largest_read <= 1 << 20


# --- names and replacement -------------------------------------------------------


def test_leading_slash_dot_and_inner_dotdot_are_normalised(tmp_path: Path) -> None:
    blob = layer(file("/abs", b"1"), file("./rel", b"2"), file("a/../b", b"3"), file("c//./d", b"4"))
    root, _ = unpack(tmp_path, blob)
    assert {p: (root / p).read_bytes() for p in ("abs", "rel", "b", "c/d")} == {
        "abs": b"1",
        "rel": b"2",
        "b": b"3",
        "c/d": b"4",
    }
    assert sorted(os.listdir(root)) == ["abs", "b", "c", "rel"]


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    blob = layer(
        directory("x/"),
        file("x/child", b"gone with x"),
        file("x", b"file over dir"),
        file("y", b"old"),
        directory("y/"),
        file("y/inside", b"dir over file"),
        file("z", b"old content"),
        hardlink("z-link", "z"),
        file("z", b"new content"),
        symlink("s", "somewhere"),
        file("s", b"file over symlink"),
    )
    root, _ = unpack(tmp_path, blob)
    assert (root / "x").read_bytes() == b"file over dir"
    assert (root / "y/inside").read_bytes() == b"dir over file"
    assert (root / "z").read_bytes() == b"new content"
    assert (root / "z-link").read_bytes() == b"old content"  # tar semantics: the link kept the old inode
    assert (root / "s").is_file() and not (root / "s").is_symlink()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the target, with a file a bad layer would reach for."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim").write_bytes(b"untouched")
    return path


def _assert_untouched(outside: Path) -> None:
    assert os.listdir(outside) == ["victim"]
    assert (outside / "victim").read_bytes() == b"untouched"
    assert os.stat(outside / "victim").st_nlink == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda out: [file("../x")],
        lambda out: [file("a/../../x")],
        lambda out: [file("/../outside/victim", b"pwned")],
        lambda out: [symlink("l", "/"), file(f"l/{out}/victim", b"pwned")],  # `l -> /`, then `l/etc/passwd`, in tmp
        lambda out: [symlink("l", str(out)), file("l/victim", b"pwned")],
        lambda out: [symlink("l", str(out)), directory("l/sub/")],
        lambda out: [directory("d/"), symlink("d/up", "../.."), file("d/up/outside/new")],
        lambda out: [hardlink("h", "../../etc/passwd")],
        lambda out: [hardlink("h", "../outside/victim")],
        lambda out: [symlink("l", str(out)), hardlink("h", "l/victim")],
        lambda out: [hardlink("h", "not-yet-there"), file("not-yet-there")],
        lambda out: [directory("d/"), hardlink("h", "d")],
        lambda out: [entry(".", tarfile.REGTYPE)],
    ],
    ids=[
        "dotdot",
        "inner-dotdot-escapes",
        "rooted-dotdot",
        "through-symlink-to-root",
        "through-symlink-outside",
        "dir-through-symlink",
        "through-relative-symlink",
        "hardlink-to-etc-passwd",
        "hardlink-outside",
        "hardlink-through-symlink",
        "hardlink-to-later-entry",
        "hardlink-to-dir",
        "root-not-a-dir",
    ],
)
def test_escaping_entries_are_refused(tmp_path: Path, outside: Path, make: Any) -> None:
    with pytest.raises(UnsafeLayer) as refused:
        unpack(tmp_path, layer(*make(outside)))
    assert "layer entry" in str(refused.value)
    _assert_untouched(outside)


def test_replacing_a_symlink_never_writes_through_it(tmp_path: Path, outside: Path) -> None:
    blob = layer(
        symlink("f", str(outside / "victim")),
        file("f", b"mine"),
        symlink("d", str(outside)),
        directory("d/"),
        file("d/victim", b"mine too"),
    )
    root, _ = unpack(tmp_path, blob)
    assert (root / "f").read_bytes() == b"mine" and not (root / "f").is_symlink()
    assert (root / "d/victim").read_bytes() == b"mine too" and not (root / "d").is_symlink()
    _assert_untouched(outside)


def test_a_hardlink_to_a_symlink_links_the_symlink_itself(tmp_path: Path, outside: Path) -> None:
    root, _ = unpack(tmp_path, layer(symlink("l", str(outside / "victim")), hardlink("h", "l")))
    assert os.lstat(root / "h").st_ino == os.lstat(root / "l").st_ino
    assert os.readlink(root / "h") == str(outside / "victim")
    _assert_untouched(outside)


@needs_root
def test_a_hardlink_to_a_whiteout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeLayer, match="not an earlier file"):
        unpack(tmp_path, layer(file(".wh.gone"), hardlink("h", "gone")))


def test_the_target_must_be_empty(tmp_path: Path) -> None:
    target = tmp_path / "layer"
    target.mkdir()
    (target / "leftover").touch()
    with pytest.raises(ValueError, match="not empty"):
        unpack_layer(io.BytesIO(layer(file("f"))), target, media_type=OCI_TAR)


# --- against GNU tar -----------------------------------------------------------


@needs_root
@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_same_tree_as_gnu_tar(tmp_path: Path) -> None:
    blob = layer(
        directory("./", mode=0o755, mtime=1_600_000_000),
        directory("etc/", mtime=1_600_000_001),
        file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mtime=1_600_000_002),
        file("etc/big", os.urandom(200_000), mode=0o600),
        file("etc/empty", mode=0o400),
        directory("usr/"),
        directory("usr/bin/"),
        file("usr/bin/su", b"su", mode=0o4755),
        file("usr/bin/wall", b"wall", mode=0o2755, gid=5),
        hardlink("usr/bin/su-again", "usr/bin/su"),
        hardlink("usr/bin/su-thrice", "usr/bin/su"),
        file("usr/bin/exact", b"t", mtime="1650000000.987654321"),
        symlink("bin", "usr/bin", mtime=1_600_000_003),
        symlink("abs", "/etc/passwd", uid=1234, gid=1234),
        symlink("dangling", "/no/such/file"),
        directory("tmp/", mode=0o1777),
        directory("home/"),
        directory("home/u/", uid=1234, gid=1234, mode=0o700, xattrs={"user.dir": b"d"}),
        file("home/u/f", b"data", uid=1234, gid=1234, xattrs={"user.text": b"t", "trusted.bin": b"\x00\x01\xff"}),
        directory("ro/", mode=0o555),
        file("ro/inside", b"x"),
        directory("dev/"),
        node("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666),
        node("dev/sda", tarfile.BLKTYPE, 8, 0, mode=0o660, gid=6),
        directory("run/"),
        node("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    )
    layer_file = tmp_path / "layer.tar"
    layer_file.write_bytes(blob)
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(
        ["tar", "-x", "-f", str(layer_file), "-C", str(by_tar),
         "--xattrs", "--xattrs-include=*", "-p", "--numeric-owner"],
        check=True, capture_output=True,
    )  # fmt: skip
    ours, _ = unpack(tmp_path, blob)

    our_tree, our_links = tree(ours)
    tar_tree, tar_links = tree(by_tar)
    assert our_tree.keys() == tar_tree.keys()
    for path in our_tree:
        assert our_tree[path] == tar_tree[path], path
    assert our_links == tar_links == {frozenset({"usr/bin/su", "usr/bin/su-again", "usr/bin/su-thrice"})}


@pytest.mark.timeout(10)  # the regression fails, rather than passing 37 s later
def test_absurd_pax_mtime_is_clamped_not_computed(tmp_path: Path) -> None:
    """A PAX mtime of 1e999985 once made int(Decimal * 1e9) build a
    3-million-bit number, holding the GIL for ~37 s per entry."""
    info, data = file("f", b"x")
    info.pax_headers = {"mtime": "1e999985"}
    huge = layer((info, data))
    target, _ = unpack(tmp_path, huge)
    assert (target / "f").read_bytes() == b"x"
