"""Importing image archives (`podrt image import`), for nodes without a registry.

Two formats, each as a tar file (plain or compressed) or as a directory:

* an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`):
  every manifest `index.json` lists is imported, a nested index resolved to
  this host's platform as a pull does. The name is the entry's
  `io.containerd.image.name` annotation (a full reference, normalised as the
  kubelet's names are) or else its `org.opencontainers.image.ref.name`, named
  as `podman load` names it, so that both tools agree on what an archive
  holds: a ref.name whose first component is a registry
  (`quay.io/x/y:1`, `docker.io/busybox`) is that reference, normalised; any
  other is unqualified and goes under `localhost/` with `latest` as its tag
  when it has none (`app:1` is `localhost/app:1`; the bare tag `1.36` the
  spec suggests is `localhost/1.36:latest`). Nothing unqualified is taken
  for a docker.io image: an archive cannot claim a registry's name without
  writing it. A ref.name that makes no reference (`V1`: the spec allows
  capitals, references do not) leaves the image named by ID only.
* a `docker save` archive (`manifest.json`: Config, RepoTags, Layers, whose
  paths are files of the archive: `<id>/layer.tar` in the old format,
  `blobs/sha256/<hex>` from docker 25 on). There is no registry manifest, so
  one is synthesised (config and layers with digests, sizes and media types)
  and stored as a blob: the store's garbage collector finds an image's layer
  blobs through its manifest. Its RepoTags name it (docker's familiar names:
  `busybox:1` is `docker.io/library/busybox:1`).

`name` (`podrt image import --name REF`) names the image of a one-image
archive instead of whatever the archive says: an air-gapped node's operator
decides what the kubelet will ask for.

An archive is untrusted input, like a registry: every blob is verified on its
way into the blob store (against its digest in the layout; a docker save
layer's digest is computed while it streams in and its diff ID is checked
when it is unpacked), the paths an archive names may not leave it, and
manifests and configs are size-capped. Records are written only once every
image of the archive is in place; on any error what this import added and no
record needs (blobs, layers) is removed again, so a refused archive leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import IO, Any, Protocol

from podrt.errors import InvalidArgument, NotFound
from podrt.images.blobs import BlobMismatch, chunks_of, digest_of, parse_digest
from podrt.images.pull import host_platform, select_platform
from podrt.images.registry import INDEX_TYPES
from podrt.images.store import ImageRecord, ImageStore, chain_ids
from podrt.images.unpack import CorruptLayer, UnsafeLayer, compression, lexical_parts
from podrt.oci import reference

log = logging.getLogger(__name__)

CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
LAYER_ZSTD = LAYER_TAR + "+zstd"

MAX_JSON = 8 << 20  # an index, manifest or config is small; a bigger one is not one
_CHUNK = 1 << 20
_MAX_LINK_HOPS = 16
_MAX_INDEX_DEPTH = 4
_BLOB_PATH = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_CONFIG_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})\.json")  # old docker save: <config hex>.json
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


class _Problem(Exception):
    """What is wrong inside the archive; turned into InvalidArgument naming it."""


async def import_archive(store: ImageStore, path: Path, name: str | None = None) -> list[ImageRecord]:
    """Import every image of the archive at `path` into `store` (whose records
    are loaded and whose dirs exist); the records as stored, one per image.
    `name`: a reference naming the archive's only image, in place of the
    names the archive gives.

    Raises InvalidArgument (one line naming the archive) when the archive is
    not one podrt reads or does not hold what it claims, or holds more than
    one image when `name` is given; nothing of it stays.
    """
    label = str(path)
    ref = _import_name(name) if name is not None else None
    try:
        source = await asyncio.to_thread(_open_source, path)
    except _Problem as exc:
        raise InvalidArgument(f"{label}: {exc}") from None
    try:
        return await _Import(store, source, label, ref).run()
    finally:
        await asyncio.to_thread(source.close)


def _import_name(name: str) -> reference.Reference:
    """The reference `name` gives an import: normalised like a pull's, and
    without a digest (the archive's manifest decides that, not its reader)."""
    ref = reference.parse(name)
    if ref.digest is not None:
        raise InvalidArgument(f'invalid name "{name}" for an imported image: a name to give takes a tag, not a digest')
    return ref


def ref_name_reference(text: str) -> reference.Reference:
    """The reference an OCI `org.opencontainers.image.ref.name` names, as
    `podman load` names it (libimage's NormalizeName): qualified by a
    registry, the reference itself, else under `localhost/`; `latest` when
    it has no tag. InvalidArgument when that makes no reference."""
    first, slash, _rest = text.partition("/")
    return reference.parse(text if slash and reference.is_domain(first) else f"localhost/{text}")


# --- reading the archive -----------------------------------------------------


def _normalise(name: str, base: str = "") -> str:
    """`name` (relative to the archive dir `base`) as a clean path inside the
    archive; '..' may not climb out and an absolute name is outside already."""
    parts = None if name.startswith("/") else lexical_parts(name, tuple(p for p in base.split("/") if p not in ("", ".")))
    if parts is None:
        raise _Problem(f"path {name!r} escapes the archive")
    return "/".join(parts)


class _Source(Protocol):
    def has(self, name: str) -> bool: ...

    def open(self, name: str) -> tuple[IO[bytes], int]: ...

    def close(self) -> None: ...


def _open_source(path: Path) -> _Source:
    if path.is_dir():
        return _DirSource(path)
    if not path.exists():
        raise _Problem("no such file or directory")
    return _TarSource(path)


class _DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        target = (self.root / _normalise(name)).resolve()
        if not target.is_relative_to(self.root):  # through a symlink of the dir
            raise _Problem(f"path {name!r} escapes the archive (it leads to {target})")
        return target

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> tuple[IO[bytes], int]:
        target = self._path(name)
        if not target.is_file():
            raise _Problem(f"{name} is missing (or not a file)")
        f = open(target, "rb")
        return f, os.fstat(f.fileno()).st_size

    def close(self) -> None:
        pass


class _TarSource:
    """Random access to a tar file's members ('r:*': plain, gzip, bzip2 or xz);
    links between members are followed inside the archive only (old docker
    save archives make a repeated layer.tar a symlink to the first)."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")
        except OSError as exc:
            raise _Problem(exc.strerror or str(exc)) from None
        except _READ_ERRORS:  # its message lists every decompressor tried, over several lines
            raise _Problem("not an image archive (a tar file, optionally compressed, or a directory)") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self.tar:
                try:
                    name = _normalise(member.name.lstrip("/"))
                except _Problem:
                    continue  # nothing can name it
                if name:
                    self.members[name] = member  # a later entry wins, as in tar
        except _READ_ERRORS as exc:
            self.tar.close()
            raise _Problem(f"unreadable tar archive: {_one_line(exc)}") from None

    def _member(self, name: str) -> tarfile.TarInfo | None:
        current = _normalise(name)
        for _ in range(_MAX_LINK_HOPS):
            member = self.members.get(current)
            if member is None or member.isreg():
                return member
            if member.issym():
                current = _normalise(member.linkname, current.rpartition("/")[0])
            elif member.islnk():
                current = _normalise(member.linkname.lstrip("/"))
            else:
                raise _Problem(f"{name} is not a regular file")
        raise _Problem(f"{name}: too many levels of links")

    def has(self, name: str) -> bool:
        return self._member(name) is not None

    def open(self, name: str) -> tuple[IO[bytes], int]:
        member = self._member(name)
        if member is None:
            raise _Problem(f"{name} is missing")
        f = self.tar.extractfile(member)
        assert f is not None  # a regular file
        return f, member.size

    def close(self) -> None:
        self.tar.close()


# --- the import --------------------------------------------------------------


class _Import:
    def __init__(self, store: ImageStore, source: _Source, label: str, name: reference.Reference | None = None) -> None:
        self.store, self.source, self.label, self.name = store, source, label, name
        self.new_blobs: list[str] = []  # what this import added, removed again if it fails
        self.new_layers: list[str] = []

    def _invalid(self, what: str) -> InvalidArgument:
        return InvalidArgument(f"{self.label}: {what}")

    async def run(self) -> list[ImageRecord]:
        started = time.monotonic()
        try:
            try:
                if await asyncio.to_thread(self.source.has, "index.json"):
                    kind, images = "OCI image layout", await self._oci()
                elif await asyncio.to_thread(self.source.has, "manifest.json"):
                    kind, images = "docker save archive", await self._docker()
                else:
                    raise self._invalid("neither index.json (an OCI image layout) nor manifest.json "
                                        "(a docker save archive) in it")
            except _Problem as exc:
                raise self._invalid(str(exc)) from None
            if not images:
                raise self._invalid(f"the {kind} lists no image")
            ids = list(dict.fromkeys(r.id for r in images))
            for record in images:
                self.store.keep(record)
        except BaseException:
            await asyncio.to_thread(self._roll_back)
            raise
        stored = [r for r in map(self.store.get, ids) if r is not None]
        log.info("imported %d image(s) from %s (%s) in %.2fs", len(stored), self.label, kind, time.monotonic() - started)
        return stored

    def _roll_back(self) -> None:
        """Remove the layers and blobs this import added that no record needs."""
        layers, blobs = self.store.referenced()
        for chain in self.new_layers:
            if chain in layers:
                continue
            try:
                link = self.store.dir / self.store.lower_link(chain)
            except (OSError, ValueError, KeyError):
                link = None
            shutil.rmtree(self.store.layer_dir(chain), ignore_errors=True)
            if link is not None:
                link.unlink(missing_ok=True)
        for digest in self.new_blobs:
            if digest not in blobs:
                self.store.blobs.delete(digest)

    # ---- members -------------------------------------------------------------

    def _read_small(self, name: str) -> bytes:
        f, size = self.source.open(name)
        with f:
            if size > MAX_JSON:
                raise _Problem(f"{name} is {size} bytes, more than the {MAX_JSON} a manifest or config may have")
            try:
                return f.read()
            except _READ_ERRORS as exc:
                raise _Problem(f"reading {name}: {_one_line(exc)}") from None

    async def _json(self, name: str, digest: str | None = None, size: int | None = None) -> tuple[bytes, Any]:
        """A small member, parsed; checked against `digest` and `size` when given."""
        data = await asyncio.to_thread(self._read_small, name)
        if digest is not None:
            seen = digest_of(data)
            if seen != digest:
                raise _Problem(f"blob {name} has digest {seen}, not the {digest} it is named by")
        if size is not None and len(data) != size:
            raise _Problem(f"blob {name} is {len(data)} bytes, its descriptor says {size}")
        try:
            return data, json.loads(data)
        except ValueError as exc:
            raise _Problem(f"{name} is not valid JSON: {exc}") from None

    async def _chunks(self, name: str) -> AsyncGenerator[bytes, None]:
        f, _size = await asyncio.to_thread(self.source.open, name)
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(f.read, _CHUNK)
                except _READ_ERRORS as exc:
                    raise _Problem(f"reading {name}: {_one_line(exc)}") from None
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

    # ---- blobs ---------------------------------------------------------------

    async def _put(self, digest: str, size: int | None, chunks: AsyncGenerator[bytes, None], what: str) -> None:
        """Store a blob of known digest, verified by the blob store."""
        try:
            if self.store.blobs.has(digest):
                return
            try:
                await self.store.blobs.write(digest, size, chunks)
            except BlobMismatch as exc:
                raise _Problem(f"{what}: {exc}") from None
            self.new_blobs.append(digest)
        finally:
            await chunks.aclose()  # closes the member now, not when collected

    async def _put_computed(self, name: str) -> str:
        """Stream a member into the blob store, its digest learnt on the way."""
        chunks = self._chunks(name)
        try:
            path = await self.store.blobs.write(None, None, chunks)
        finally:
            await chunks.aclose()
        digest = f"sha256:{path.name}"
        if digest not in self.new_blobs:
            self.new_blobs.append(digest)
        return digest

    def _blob_name(self, desc: Any) -> tuple[str, str, int]:
        """(member path, digest, size) of an OCI descriptor."""
        if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) or not isinstance(desc.get("size"), int):
            raise _Problem(f"malformed descriptor {json.dumps(desc)[:200]}")
        try:
            hex_ = parse_digest(desc["digest"])
        except ValueError as exc:
            raise _Problem(str(exc)) from None
        return f"blobs/sha256/{hex_}", desc["digest"], desc["size"]

    # ---- layers --------------------------------------------------------------

    async def _unpack(self, chain: str, diff_id: str, digest: str, media_type: str, what: str) -> None:
        if self.store.has_layer(chain):
            return
        try:
            await self.store.add_layer(chain, diff_id, digest, media_type)
        except (UnsafeLayer, CorruptLayer, ValueError) as exc:
            raise _Problem(f"layer {what}: {exc}") from None
        self.new_layers.append(chain)

    def _diff_ids(self, config: Any, layers: int, what: str) -> list[str]:
        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise _Problem(f"config {what} has no rootfs.diff_ids")
        if len(diff_ids) != layers:
            raise _Problem(f"{layers} layers but {len(diff_ids)} diff IDs in the config {what}")
        for d in diff_ids:
            try:
                parse_digest(d)
            except ValueError as exc:
                raise _Problem(f"config {what}: {exc}") from None
        return diff_ids

    def _one_image(self, kind: str, images: int) -> None:
        """With a name to give, the archive must hold one image: which of several would it name?"""
        if self.name is not None and images > 1:
            raise _Problem(f"the {kind} holds {images} images, and a name (--name {self.name}) names one: "
                           "import it without a name")

    def _check_platform(self, config: Any, what: str) -> None:
        os_, arch, _variant = host_platform()
        if isinstance(config, dict) and (config.get("os"), config.get("architecture")) != (os_, arch):
            log.warning("%s: image %s is for %s/%s, this host is %s/%s", self.label, what,
                        config.get("os"), config.get("architecture"), os_, arch)

    # ---- OCI image layout ------------------------------------------------------

    async def _oci(self) -> list[ImageRecord]:
        _data, index = await self._json("index.json")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise _Problem("index.json has no manifests list")
        entries = index["manifests"]
        self._one_image("OCI image layout", len({self._blob_name(e)[1] for e in entries}))  # an image listed twice is one
        return [await self._oci_image(entry) for entry in entries]

    def _oci_name(self, entry: dict[str, Any]) -> reference.Reference | None:
        """The name given, else the entry's annotations' (module doc); None: by ID only."""
        if self.name is not None:
            return self.name
        annotations = entry.get("annotations")
        if not isinstance(annotations, dict):
            annotations = {}
        full, ref_name = annotations.get(CONTAINERD_NAME), annotations.get(OCI_REF_NAME)
        if isinstance(full, str) and full:
            try:
                return reference.parse(full)
            except InvalidArgument as exc:
                raise _Problem(f"{CONTAINERD_NAME} of manifest {entry['digest']}: {exc}") from None
        if not isinstance(ref_name, str) or not ref_name:
            log.warning("%s: manifest %s has no name annotation: imported by ID only", self.label, entry["digest"])
            return None
        try:
            return ref_name_reference(ref_name)
        except InvalidArgument as exc:
            log.warning("%s: manifest %s: %s %r names no image (%s): imported by ID only", self.label,
                        entry["digest"], OCI_REF_NAME, ref_name, exc)
            return None

    async def _oci_image(self, entry: Any) -> ImageRecord:
        name, named, _size = self._blob_name(entry)
        ref = self._oci_name(entry)
        desc = entry
        data, doc = await self._json(name, named, _size)
        for _depth in range(_MAX_INDEX_DEPTH):
            is_index = (desc.get("mediaType") in INDEX_TYPES or (isinstance(doc, dict) and doc.get("mediaType") in INDEX_TYPES)
                        or (isinstance(doc, dict) and "manifests" in doc and "config" not in doc))
            if not is_index:
                break
            entries = doc.get("manifests") if isinstance(doc, dict) else None
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise _Problem(f"index {desc['digest']} has no manifests list")
            try:
                chosen = select_platform(doc)
            except NotFound as exc:
                raise _Problem(f"index {named}: {exc}") from None
            except (AttributeError, KeyError, TypeError):
                raise _Problem(f"index {named}: malformed platform entries") from None
            desc = next(e for e in entries if e.get("digest") == chosen)
            name, digest, size = self._blob_name(desc)
            data, doc = await self._json(name, digest, size)
        else:
            raise _Problem(f"index {named}: indexes nested more than {_MAX_INDEX_DEPTH} deep")
        manifest_digest = desc["digest"]
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            raise _Problem(f"manifest {manifest_digest} has no config and layers")

        config_name, config_digest, config_size = self._blob_name(doc["config"])
        layer_blobs = [self._blob_name(d) for d in doc["layers"]]
        config_data, config = await self._json(config_name, config_digest, config_size)
        diff_ids = self._diff_ids(config, len(layer_blobs), config_digest)
        self._check_platform(config, str(ref or config_digest))

        await self._put(manifest_digest, len(data), chunks_of(data), f"manifest {manifest_digest}")
        await self._put(config_digest, config_size, chunks_of(config_data), f"config {config_digest}")
        for layer_name, digest, size in layer_blobs:
            await self._put(digest, size, self._chunks(layer_name), f"layer {digest}")
        chains = chain_ids(diff_ids)
        for chain, diff_id, layer_desc, (_n, digest, _s) in zip(chains, diff_ids, doc["layers"], layer_blobs):
            await self._unpack(chain, diff_id, digest, str(layer_desc.get("mediaType", "")), digest)

        size = config_size + sum(s for _n, _d, s in layer_blobs)
        tags = (str(ref),) if ref is not None and ref.tag and not ref.digest else ()
        digests = (ref.repo_digest(named),) if ref is not None else ()
        return ImageRecord(id=config_digest, repo_tags=tags, repo_digests=digests, manifest_digest=manifest_digest,
                           layers=tuple(chains), size=size, created_at=time.time_ns())

    # ---- docker save -----------------------------------------------------------

    async def _docker(self) -> list[ImageRecord]:
        _data, doc = await self._json("manifest.json")
        if not isinstance(doc, list):
            raise _Problem("manifest.json is not a list of images")
        self._one_image("docker save archive", len({json.dumps(e.get("Config") if isinstance(e, dict) else e) for e in doc}))
        return [await self._docker_image(n, entry) for n, entry in enumerate(doc)]

    async def _docker_image(self, n: int, entry: Any) -> ImageRecord:
        if (not isinstance(entry, dict) or not isinstance(entry.get("Config"), str)
                or not isinstance(entry.get("Layers"), list) or not all(isinstance(p, str) for p in entry["Layers"])):
            raise _Problem(f"manifest.json entry {n} has no Config and Layers")
        tags = [str(self.name)] if self.name is not None else self._repo_tags(n, entry)

        config_path = _normalise(entry["Config"])
        config_data, config = await self._json(config_path)
        config_digest = digest_of(config_data)
        named = _BLOB_PATH.fullmatch(config_path) or _CONFIG_NAME.fullmatch(config_path)
        if named and named.group(1) != config_digest[7:]:
            raise _Problem(f"config {config_path} has digest {config_digest}, not the one its name gives")
        layer_paths = [_normalise(p) for p in entry["Layers"]]
        diff_ids = self._diff_ids(config, len(layer_paths), config_path)
        self._check_platform(config, tags[0] if tags else config_digest)
        await self._put(config_digest, len(config_data), chunks_of(config_data), f"config {config_path}")

        descs: list[dict[str, Any]] = []
        for path in layer_paths:
            if (blob := _BLOB_PATH.fullmatch(path)) is not None:  # docker 25+: the path names the digest
                digest = f"sha256:{blob.group(1)}"
                await self._put(digest, None, self._chunks(path), f"layer {path}")
            else:
                digest = await self._put_computed(path)
            descs.append({"mediaType": await asyncio.to_thread(self._media_type, digest), "digest": digest,
                          "size": self.store.blobs.path(digest).stat().st_size})
        chains = chain_ids(diff_ids)
        for chain, diff_id, desc, path in zip(chains, diff_ids, descs, layer_paths):
            await self._unpack(chain, diff_id, desc["digest"], desc["mediaType"], path)

        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_data)},
            "layers": descs,
        }, separators=(",", ":")).encode()
        manifest_digest = digest_of(manifest)
        await self._put(manifest_digest, len(manifest), chunks_of(manifest), "synthesised manifest")
        return ImageRecord(id=config_digest, repo_tags=tuple(dict.fromkeys(tags)), repo_digests=(),
                           manifest_digest=manifest_digest, layers=tuple(chains),
                           size=len(config_data) + sum(d["size"] for d in descs), created_at=time.time_ns())

    @staticmethod
    def _repo_tags(n: int, entry: dict[str, Any]) -> list[str]:
        """The names RepoTags gives, normalised (docker's familiar names are docker.io's)."""
        tags_in = entry.get("RepoTags") or []
        if not isinstance(tags_in, list) or not all(isinstance(t, str) for t in tags_in):
            raise _Problem(f"manifest.json entry {n}: RepoTags is not a list of names")
        tags: list[str] = []
        for text in tags_in:
            try:
                ref = reference.parse(text)
            except InvalidArgument as exc:
                raise _Problem(str(exc)) from None
            if ref.digest is None:
                tags.append(str(ref))
        return tags

    def _media_type(self, digest: str) -> str:
        with open(self.store.blobs.path(digest), "rb") as f:
            kind = compression(f.read(4))
        return {"gzip": LAYER_GZIP, "zstd": LAYER_ZSTD}.get(kind, LAYER_TAR)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
