"""Importing image archives (podrt.images.archive; `podrt image import`).

Archives are built here with tarfile, json and hashlib: an OCI image layout
(as a dir, a tar and a tar.gz) and docker save archives (old `<id>/layer.tar`
paths and docker 25's `blobs/sha256/<hex>` paths), each image two layers, the
second with a whiteout.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from podrt.errors import InvalidArgument
from podrt.images.archive import import_archive, ref_name_reference
from podrt.images.pull import host_platform
from podrt.images.store import ImageRecord, ImageStore, chain_ids
from tests.support.daemon import podrt_command

IS_ROOT = os.geteuid() == 0
MTIME = 1_700_000_000
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"


# --- building images ---------------------------------------------------------


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(entries: list[tuple[str, bytes, bytes]], *, gz: bool = False) -> bytes:
    """(name, tar type, data) entries as a tar stream, gzipped when `gz`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.uid, info.gid = kind, MTIME, 0, 0
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def layers(tag: bytes = b"") -> list[bytes]:
    """Two plain layer tars: files, then a whiteout of one of them and a new file."""
    one = tar_bytes([("etc", tarfile.DIRTYPE, b""), ("etc/hello", tarfile.REGTYPE, b"hello " + tag),
                     ("etc/gone", tarfile.REGTYPE, b"to be removed")])
    two = tar_bytes([("etc", tarfile.DIRTYPE, b""), ("etc/.wh.gone", tarfile.REGTYPE, b""),
                     ("etc/new", tarfile.REGTYPE, b"new " + tag)])
    return [one, two]


def config_for(plain: list[bytes], arch: str | None = None, tag: str = "") -> bytes:
    os_, host_arch, _ = host_platform()
    return json.dumps({"architecture": arch or host_arch, "os": os_, "config": {"Cmd": ["/bin/sh"], "Label": tag},
                       "rootfs": {"type": "layers", "diff_ids": [sha(p) for p in plain]}}).encode()


def desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data), **extra}


class Oci:
    """An OCI image layout in memory: path -> bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
        self.index: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> str:
        self.files[f"blobs/sha256/{sha(data)[7:]}"] = data
        return sha(data)

    def image(self, arch: str | None = None, tag: bytes = b"") -> tuple[dict[str, Any], bytes, list[bytes]]:
        """(manifest descriptor, config, plain layers); layer 1 gzipped, layer 2 plain."""
        plain = layers(tag)
        blobs = [gzip.compress(plain[0], mtime=0), plain[1]]
        config = config_for(plain, arch, tag.decode())
        for b in (config, *blobs):
            self.blob(b)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": desc(OCI_CONFIG, config),
                               "layers": [desc(LAYER_GZIP, blobs[0]), desc(LAYER_TAR, blobs[1])]}).encode()
        self.blob(manifest)
        return desc(OCI_MANIFEST, manifest), config, plain

    def add(self, descriptor: dict[str, Any], **annotations: str) -> None:
        self.index.append({**descriptor, **({"annotations": annotations} if annotations else {})})

    def write_dir(self, root: Path) -> Path:
        files = {**self.files, "index.json": json.dumps({"schemaVersion": 2, "manifests": self.index}).encode()}
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root

    def write_tar(self, path: Path, gz: bool = False) -> Path:
        files = {**self.files, "index.json": json.dumps({"schemaVersion": 2, "manifests": self.index}).encode()}
        path.write_bytes(tar_bytes([(n, tarfile.REGTYPE, d) for n, d in files.items()], gz=gz))
        return path


def docker_save(path: Path, tags: list[str], *, blob_paths: bool = False, gz_first: bool = False,
                corrupt_diff: bool = False, tag: bytes = b"") -> tuple[bytes, list[bytes]]:
    """A docker save tar; (config, plain layers)."""
    plain = layers(tag)
    config = config_for(plain, tag=tag.decode())
    if corrupt_diff:
        plain = [plain[0], plain[1].replace(b"new ", b"NEW ")]
    stored = [gzip.compress(plain[0], mtime=0) if gz_first else plain[0], plain[1]]
    entries: list[tuple[str, bytes, bytes]] = []
    if blob_paths:
        config_name = f"blobs/sha256/{sha(config)[7:]}"
        layer_names = [f"blobs/sha256/{sha(b)[7:]}" for b in stored]
    else:
        config_name = f"{sha(config)[7:]}.json"
        layer_names = [f"{hashlib.sha256(b'v1' + bytes([i])).hexdigest()}/layer.tar" for i in range(2)]
    entries.append((config_name, tarfile.REGTYPE, config))
    for name, data in zip(layer_names, stored):
        entries.append((name, tarfile.REGTYPE, data))
    manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]
    entries.append(("manifest.json", tarfile.REGTYPE, json.dumps(manifest).encode()))
    path.write_bytes(tar_bytes(entries))
    return config, plain


# --- checking ----------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    s = ImageStore(tmp_path / "root" / "images")
    s.prepare()
    return s


def check_layers(store: ImageStore, record: ImageRecord, plain: list[bytes], tag: bytes = b"") -> None:
    assert list(record.layers) == chain_ids([sha(p) for p in plain])
    one, two = (store.layer_dir(c) / "diff" for c in record.layers)
    assert (one / "etc/hello").read_bytes() == b"hello " + tag
    assert (one / "etc/gone").read_bytes() == b"to be removed"
    assert (two / "etc/new").read_bytes() == b"new " + tag
    assert not (two / "etc/hello").exists()
    if IS_ROOT:  # the whiteout became an overlayfs one: a 0/0 character device
        st = os.lstat(two / "etc/gone")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    for chain in record.layers:
        assert (store.dir / store.lower_link(chain)).resolve() == (store.layer_dir(chain) / "diff").resolve()


def check_kept_by_gc(store: ImageStore) -> None:
    blobs, layer_dirs = sorted(store.blobs.digests()), sorted(p.name for p in store.layers_dir.iterdir())
    assert store.collect_garbage() == []
    assert sorted(store.blobs.digests()) == blobs
    assert sorted(p.name for p in store.layers_dir.iterdir()) == layer_dirs
    reloaded = ImageStore(store.dir)
    reloaded.load_records()
    assert {r.id: r for r in reloaded.records()} == {r.id: r for r in store.records()}


def assert_nothing_stored(store: ImageStore) -> None:
    assert store.records() == [] and list(store.records_dir.iterdir()) == []
    assert list(store.layers_dir.iterdir()) == [] and list(store.links_dir.iterdir()) == []
    assert store.blobs.digests() == [] and list(store.blobs.ingest_dir.iterdir()) == []


# --- OCI image layout ---------------------------------------------------------


@pytest.mark.parametrize("form", ["dir", "tar", "tar.gz"])
async def test_oci_layout(store: ImageStore, tmp_path: Path, form: str) -> None:
    oci = Oci()
    manifest, config, plain = oci.image()
    oci.add(manifest, **{"io.containerd.image.name": "example.com/team/app:1.0", "org.opencontainers.image.ref.name": "1.0"})
    archive = {"dir": lambda: oci.write_dir(tmp_path / "layout"), "tar": lambda: oci.write_tar(tmp_path / "a.tar"),
               "tar.gz": lambda: oci.write_tar(tmp_path / "a.tar.gz", gz=True)}[form]()

    [record] = await import_archive(store, archive)

    assert record.id == sha(config)
    assert record.repo_tags == ("example.com/team/app:1.0",)
    assert record.repo_digests == (f"example.com/team/app@{manifest['digest']}",)
    assert record.manifest_digest == manifest["digest"]
    stored_blobs = set(store.blobs.digests())
    layer_descs = json.loads(oci.files[f"blobs/sha256/{manifest['digest'][7:]}"])["layers"]
    assert stored_blobs == {manifest["digest"], sha(config), *(d["digest"] for d in layer_descs)}
    assert record.size == len(config) + sum(d["size"] for d in layer_descs)
    assert store.get(record.id) == record
    check_layers(store, record, plain)
    check_kept_by_gc(store)
    assert list(store.blobs.ingest_dir.iterdir()) == []


@pytest.mark.parametrize("ref_name,name", [
    # qualified by a registry: the reference itself, normalised
    ("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36"),
    ("quay.io/x/y:tag", "quay.io/x/y:tag"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/team/app:2", "docker.io/team/app:2"),
    ("localhost/app:2", "localhost/app:2"),
    ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000/team/app:v1"),
    # unqualified: under localhost/, as podman load names it (never docker.io's)
    ("busybox:1.36", "localhost/busybox:1.36"),
    ("library/busybox:1.36", "localhost/library/busybox:1.36"),
    ("app", "localhost/app:latest"),
    ("1.36", "localhost/1.36:latest"),  # the spec's bare tag
    ("latest", "localhost/latest:latest"),
])
def test_ref_name_is_named_as_podman_names_it(ref_name: str, name: str) -> None:
    assert str(ref_name_reference(ref_name)) == name


@pytest.mark.parametrize("ref_name", ["V1.0", "_x", "quay.io/Team/app:1", "a@b", "x" * 300])
def test_ref_name_that_makes_no_reference(ref_name: str) -> None:
    with pytest.raises(InvalidArgument):
        ref_name_reference(ref_name)


async def test_oci_layout_names_images_by_ref_name(store: ImageStore, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    oci = Oci()
    bare, config_bare, _ = oci.image(tag=b"a")
    short, config_short, _ = oci.image(tag=b"b")
    full, config_full, _ = oci.image(tag=b"c")
    capital, config_capital, _ = oci.image(tag=b"d")
    odd, config_odd, _ = oci.image(tag=b"e")
    oci.add(bare, **{"org.opencontainers.image.ref.name": "1.36"})
    oci.add(short, **{"org.opencontainers.image.ref.name": "busybox:1.36"})
    oci.add(full, **{"org.opencontainers.image.ref.name": "quay.io/x/y:tag"})
    oci.add(capital, **{"org.opencontainers.image.ref.name": "V1.0"})
    oci.index.append({**odd, "annotations": ["not", "a", "map"]})
    with caplog.at_level(logging.WARNING, logger="podrt.images.archive"):
        records = await import_archive(store, oci.write_tar(tmp_path / "a.tar"))
    named = {r.id: (r.repo_tags, r.repo_digests) for r in records}
    assert named == {
        sha(config_bare): (("localhost/1.36:latest",), (f"localhost/1.36@{bare['digest']}",)),
        sha(config_short): (("localhost/busybox:1.36",), (f"localhost/busybox@{short['digest']}",)),
        sha(config_full): (("quay.io/x/y:tag",), (f"quay.io/x/y@{full['digest']}",)),
        sha(config_capital): ((), ()),
        sha(config_odd): ((), ()),
    }
    assert "'V1.0' names no image" in caplog.text and "repository name must be lowercase" in caplog.text
    assert f"manifest {odd['digest']} has no name annotation" in caplog.text
    check_kept_by_gc(store)


async def test_a_bad_containerd_name_is_refused(store: ImageStore, tmp_path: Path) -> None:
    oci = Oci()
    manifest, _, _ = oci.image()
    oci.add(manifest, **{"io.containerd.image.name": "Example.com/Bad/Name:1", "org.opencontainers.image.ref.name": "1"})
    with pytest.raises(InvalidArgument, match="io.containerd.image.name of manifest .*lowercase"):
        await import_archive(store, oci.write_dir(tmp_path / "layout"))
    assert_nothing_stored(store)


# --- a name given ---------------------------------------------------------------


async def test_a_given_name_names_an_oci_image_instead_of_its_annotations(store: ImageStore, tmp_path: Path) -> None:
    oci = Oci()
    manifest, config, plain = oci.image()
    oci.add(manifest, **{"io.containerd.image.name": "example.com/team/app:1.0", "org.opencontainers.image.ref.name": "1.0"})
    oci.add(manifest, **{"org.opencontainers.image.ref.name": "again"})  # one image listed twice is one image
    records = await import_archive(store, oci.write_dir(tmp_path / "layout"), "registry.k8s.io/pause:3.10")
    assert {(r.id, r.repo_tags, r.repo_digests) for r in records} == {
        (sha(config), ("registry.k8s.io/pause:3.10",), (f"registry.k8s.io/pause@{manifest['digest']}",))}
    check_layers(store, records[0], plain)
    check_kept_by_gc(store)


async def test_a_given_name_names_a_docker_save_image_instead_of_its_repo_tags(store: ImageStore, tmp_path: Path) -> None:
    archive = tmp_path / "saved.tar"
    config, _ = docker_save(archive, ["Not:A:Name", "busybox:1"])  # RepoTags are not even read
    [record] = await import_archive(store, archive, "busybox:1.36")
    assert (record.id, record.repo_tags, record.repo_digests) == (sha(config), ("docker.io/library/busybox:1.36",), ())
    check_kept_by_gc(store)


async def test_a_given_name_needs_an_archive_of_one_image(store: ImageStore, tmp_path: Path) -> None:
    oci = Oci()
    for tag in (b"a", b"b"):
        oci.add(oci.image(tag=tag)[0])
    with pytest.raises(InvalidArgument, match="the OCI image layout holds 2 images, and a name") as caught:
        await import_archive(store, oci.write_tar(tmp_path / "two.tar"), "app:1")
    assert str(caught.value).startswith(f"{tmp_path / 'two.tar'}: ") and "\n" not in str(caught.value)
    assert_nothing_stored(store)

    saved = tmp_path / "saved.tar"
    docker_save(saved, ["busybox:1"])
    with tarfile.open(saved) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    entry = json.loads(members["manifest.json"])[0]
    members["manifest.json"] = json.dumps([entry, {**entry, "RepoTags": ["other:1"]},
                                           {**entry, "Config": "elsewhere.json"}]).encode()
    saved.write_bytes(tar_bytes([(n, tarfile.REGTYPE, d) for n, d in members.items()]))
    with pytest.raises(InvalidArgument, match="the docker save archive holds 2 images, and a name"):
        await import_archive(store, saved, "app:1")
    assert_nothing_stored(store)


@pytest.mark.parametrize("name,fragment", [
    ("Bad/Name", "must be lowercase"),
    ("", "reference is empty"),
    (f"app@sha256:{'a' * 64}", "not a digest"),
    ("app:1@sha256:" + "a" * 64, "not a digest"),
])
async def test_a_given_name_must_be_a_name(store: ImageStore, tmp_path: Path, name: str, fragment: str) -> None:
    oci = Oci()
    oci.add(oci.image()[0])
    with pytest.raises(InvalidArgument, match=fragment):
        await import_archive(store, oci.write_dir(tmp_path / "layout"), name)
    assert_nothing_stored(store)


async def test_index_resolves_to_this_hosts_platform(store: ImageStore, tmp_path: Path) -> None:
    os_, arch, _ = host_platform()
    other = "s390x" if arch != "s390x" else "amd64"
    oci = Oci()
    mine, config, plain = oci.image()
    theirs, their_config, _ = oci.image(arch=other, tag=b"x")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**theirs, "platform": {"os": os_, "architecture": other}},
        {**mine, "platform": {"os": os_, "architecture": arch}},
    ]}).encode()
    oci.blob(index)
    # as a single-platform export would be: the other platform's blobs are not in it
    for digest in (theirs["digest"], sha(their_config)):
        del oci.files[f"blobs/sha256/{digest[7:]}"]
    oci.add(desc(OCI_INDEX, index), **{"io.containerd.image.name": "docker.io/library/multi:latest"})

    [record] = await import_archive(store, oci.write_dir(tmp_path / "layout"))

    assert record.id == sha(config)
    assert record.manifest_digest == mine["digest"]
    assert record.repo_tags == ("docker.io/library/multi:latest",)
    assert record.repo_digests == (f"docker.io/library/multi@{sha(index)}",)  # what the name points to, as a pull
    check_layers(store, record, plain)
    assert sha(index) not in store.blobs.digests()  # like a pull: the platform manifest is what is kept
    check_kept_by_gc(store)


async def test_corrupted_blob_is_refused_and_nothing_stays(store: ImageStore, tmp_path: Path) -> None:
    oci = Oci()
    manifest, _config, _plain = oci.image()
    oci.add(manifest, **{"io.containerd.image.name": "example.com/app:1"})
    layer2 = json.loads(oci.files[f"blobs/sha256/{manifest['digest'][7:]}"])["layers"][1]["digest"]
    name = f"blobs/sha256/{layer2[7:]}"
    oci.files[name] = oci.files[name].replace(b"new ", b"NEW ")  # same size, other content

    with pytest.raises(InvalidArgument) as caught:
        await import_archive(store, oci.write_tar(tmp_path / "bad.tar"))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'bad.tar'}: ") and layer2 in message and "\n" not in message
    assert_nothing_stored(store)  # config, manifest and layer 1 were stored first, and removed again


async def test_import_keeps_what_the_store_had(store: ImageStore, tmp_path: Path) -> None:
    first = Oci()
    manifest, _, _ = first.image()
    first.add(manifest, **{"io.containerd.image.name": "example.com/app:1"})
    [before] = await import_archive(store, first.write_dir(tmp_path / "one"))
    await import_archive(store, first.write_dir(tmp_path / "one"))  # again: nothing changes
    assert store.records() == [before]
    layer_chain = before.layers[0]
    layer_inode = os.stat(store.layer_dir(layer_chain)).st_ino

    second = Oci()
    m2, _, _ = second.image()
    second.add(m2, **{"io.containerd.image.name": "example.com/app:2"})
    [after] = await import_archive(store, second.write_tar(tmp_path / "two.tar"))
    assert after.id == before.id and after.created_at == before.created_at
    assert after.repo_tags == ("example.com/app:1", "example.com/app:2")
    assert os.stat(store.layer_dir(layer_chain)).st_ino == layer_inode  # the layer was not unpacked again

    # a tag another image had moves to the imported one
    moved = tmp_path / "moved.tar"
    docker_save(moved, ["example.com/app:1"], tag=b"other")
    [other] = await import_archive(store, moved)
    assert other.id != before.id and other.repo_tags == ("example.com/app:1",)
    assert store.get(before.id).repo_tags == ("example.com/app:2",)  # type: ignore[union-attr]
    check_kept_by_gc(store)


# --- docker save -------------------------------------------------------------


@pytest.mark.parametrize("blob_paths,gz_first", [(False, False), (False, True), (True, False), (True, True)])
async def test_docker_save(store: ImageStore, tmp_path: Path, blob_paths: bool, gz_first: bool) -> None:
    archive = tmp_path / "saved.tar"
    config, plain = docker_save(archive, ["busybox:latest", "example.com/x/y:2", "busybox"],
                                blob_paths=blob_paths, gz_first=gz_first)

    [record] = await import_archive(store, archive)

    assert record.id == sha(config)
    assert record.repo_tags == ("docker.io/library/busybox:latest", "example.com/x/y:2")
    assert record.repo_digests == ()
    check_layers(store, record, plain)
    manifest = json.loads(store.blobs.path(record.manifest_digest).read_bytes())
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"] == desc(OCI_CONFIG, config)
    stored_layers = [gzip.compress(plain[0], mtime=0) if gz_first else plain[0], plain[1]]
    assert manifest["layers"] == [desc(LAYER_GZIP if gz_first else LAYER_TAR, stored_layers[0]),
                                  desc(LAYER_TAR, stored_layers[1])]
    assert set(store.blobs.digests()) == {record.manifest_digest, sha(config), *(sha(b) for b in stored_layers)}
    assert record.size == len(config) + sum(len(b) for b in stored_layers)
    check_kept_by_gc(store)


async def test_docker_save_layer_symlink_inside_the_archive(store: ImageStore, tmp_path: Path) -> None:
    """Old docker save makes a repeated layer.tar a symlink to the first one."""
    plain = layers()[:1] * 2
    config = config_for(plain)
    entries = [(f"{sha(config)[7:]}.json", tarfile.REGTYPE, config), ("a/layer.tar", tarfile.REGTYPE, plain[0])]
    link = tarfile.TarInfo("b/layer.tar")
    link.type, link.linkname = tarfile.SYMTYPE, "../a/layer.tar"
    manifest = [{"Config": entries[0][0], "RepoTags": ["twice:1"], "Layers": ["a/layer.tar", "b/layer.tar"]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, _kind, data in [*entries, ("manifest.json", tarfile.REGTYPE, json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(link)
    (tmp_path / "t.tar").write_bytes(buf.getvalue())
    [record] = await import_archive(store, tmp_path / "t.tar")
    assert list(record.layers) == chain_ids([sha(plain[0])] * 2)
    check_kept_by_gc(store)


async def test_docker_save_wrong_diff_id_stores_nothing(store: ImageStore, tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar"
    docker_save(archive, ["busybox:latest"], corrupt_diff=True)
    with pytest.raises(InvalidArgument, match="diff ID"):
        await import_archive(store, archive)
    assert_nothing_stored(store)


async def test_docker_save_config_not_matching_its_name(store: ImageStore, tmp_path: Path) -> None:
    archive = tmp_path / "saved.tar"
    config, _ = docker_save(archive, ["busybox:latest"])
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    name = f"{sha(config)[7:]}.json"
    members[name] = members[name].replace(b"/bin/sh", b"/bin/xx")
    archive.write_bytes(tar_bytes([(n, tarfile.REGTYPE, d) for n, d in members.items()]))
    with pytest.raises(InvalidArgument, match="has digest"):
        await import_archive(store, archive)
    assert_nothing_stored(store)


# --- refused archives ----------------------------------------------------------


def _escaping_docker(tmp_path: Path) -> Path:
    manifest = [{"Config": "c.json", "RepoTags": [], "Layers": ["../../etc/passwd"]}]
    config = config_for(layers()[:1])
    return _tar(tmp_path, [("c.json", config), ("manifest.json", json.dumps(manifest).encode())])


def _tar(tmp_path: Path, files: list[tuple[str, bytes]]) -> Path:
    path = tmp_path / "x.tar"
    path.write_bytes(tar_bytes([(n, tarfile.REGTYPE, d) for n, d in files]))
    return path


def _escaping_tar_symlink(tmp_path: Path) -> Path:
    config = config_for(layers()[:1])
    manifest = [{"Config": "c.json", "RepoTags": [], "Layers": ["x/layer.tar"]}]
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("c.json", config), ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("x/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tar.addfile(link)
    return path


def _junk(tmp_path: Path) -> Path:
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    return tmp_path / "junk"


def _escaping_dir_symlink(tmp_path: Path) -> Path:
    oci = Oci()
    manifest, config, _ = oci.image()
    oci.add(manifest)
    root = oci.write_dir(tmp_path / "layout")
    blob = root / f"blobs/sha256/{sha(config)[7:]}"
    outside = tmp_path / "outside"
    outside.write_bytes(config)
    blob.unlink()
    blob.symlink_to(outside)
    return root


@pytest.mark.parametrize("make,fragment", [
    (lambda p: _junk(p), "not an image archive"),
    (lambda p: p / "missing.tar", "no such file"),
    (lambda p: _tar(p, [("hello.txt", b"hi")]), "neither index.json"),
    (lambda p: _tar(p, [("index.json", b"{nope")]), "index.json is not valid JSON"),
    (lambda p: _tar(p, [("manifest.json", b"[]")]), "lists no image"),
    (_escaping_docker, "escapes the archive"),
    (_escaping_dir_symlink, "escapes the archive"),
    (_escaping_tar_symlink, "escapes the archive"),
    (lambda p: _tar(p, [("manifest.json", json.dumps([{"Config": "c.json", "Layers": []}]).encode())]),
     "c.json is missing"),
    (lambda p: _tar(p, [("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["Bad:Name:x"],
                                                       "Layers": []}]).encode())]), "invalid image reference"),
])
async def test_refused(store: ImageStore, tmp_path: Path, make: Any, fragment: str) -> None:
    archive = make(tmp_path)
    with pytest.raises(InvalidArgument) as caught:
        await import_archive(store, archive)
    message = str(caught.value)
    assert message.startswith(f"{archive}: ") and fragment in message and "\n" not in message, message
    assert_nothing_stored(store)


# --- the command ---------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(podrt_command(*args), capture_output=True, text=True, timeout=120)


def test_cli_import_then_ls(tmp_path: Path) -> None:
    conf = tmp_path / "podrt.toml"
    conf.write_text("")
    root = tmp_path / "root"
    flags = ("--config", str(conf), "--root", str(root))
    saved = tmp_path / "saved.tar"
    config, _ = docker_save(saved, ["busybox:1.36"])

    out = run("image", "import", str(saved), *flags)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["docker.io/library/busybox:1.36", sha(config)]

    oci = Oci()
    manifest, oci_config, _ = oci.image(tag=b"z")
    oci.add(manifest)
    out = run("image", "import", str(oci.write_tar(tmp_path / "oci.tar.gz", gz=True)), *flags)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [sha(oci_config), sha(oci_config)]  # no name: the ID in its place

    listed = run("image", "ls", *flags)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:2] == ["IMAGE", "ID"]
    assert any(line.split()[:2] == ["docker.io/library/busybox:1.36", sha(config)[7:19]] for line in lines)
    assert any(line.split()[:2] == ["<none>", sha(oci_config)[7:19]] for line in lines)

    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage" * 100)
    out = run("image", "import", str(bad), *flags)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and out.stderr.startswith(f"podrt: {bad}: ")
    assert "Traceback" not in out.stderr
