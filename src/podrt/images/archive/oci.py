"""An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`):
every manifest index.json lists, a nested index resolved to this host's
platform as a pull does, named by its annotations (see the package doc)."""

from __future__ import annotations

import logging
import time
from typing import Any

from podrt.errors import InvalidArgument, NotFound
from podrt.images.archive.job import Job, diff_ids
from podrt.images.archive.source import Problem, blob_name, chunks, read_json
from podrt.images.blobs import chunks_of
from podrt.images.pull import select_platform
from podrt.images.registry import INDEX_TYPES
from podrt.images.store import ImageRecord, chain_ids
from podrt.oci import reference

log = logging.getLogger(__name__)

CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
_MAX_INDEX_DEPTH = 4


def ref_name_reference(text: str) -> reference.Reference:
    """The reference an OCI `org.opencontainers.image.ref.name` names, as
    `podman load` names it (libimage's NormalizeName): qualified by a
    registry, the reference itself, else under `localhost/`; `latest` when
    it has no tag. InvalidArgument when that makes no reference."""
    first, slash, _rest = text.partition("/")
    return reference.parse(text if slash and reference.is_domain(first) else f"localhost/{text}")


async def images(job: Job) -> list[ImageRecord]:
    _data, index = await read_json(job.source, "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise Problem("index.json has no manifests list")
    entries = index["manifests"]
    job.one_image("OCI image layout", len({blob_name(e)[1] for e in entries}))  # an image listed twice is one
    return [await _image(job, entry) for entry in entries]


def _name(job: Job, entry: dict[str, Any]) -> reference.Reference | None:
    """The name given, else the entry's annotations' (package doc); None: by ID only."""
    if job.name is not None:
        return job.name
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    full, ref_name = annotations.get(CONTAINERD_NAME), annotations.get(OCI_REF_NAME)
    if isinstance(full, str) and full:
        try:
            return reference.parse(full)
        except InvalidArgument as exc:
            raise Problem(f"{CONTAINERD_NAME} of manifest {entry['digest']}: {exc}") from None
    if not isinstance(ref_name, str) or not ref_name:
        log.warning("%s: manifest %s has no name annotation: imported by ID only", job.label, entry["digest"])
        return None
    try:
        return ref_name_reference(ref_name)
    except InvalidArgument as exc:
        log.warning("%s: manifest %s: %s %r names no image (%s): imported by ID only", job.label,
                    entry["digest"], OCI_REF_NAME, ref_name, exc)
        return None


async def _manifest(job: Job, entry: Any) -> tuple[Any, bytes, Any]:
    """(descriptor, bytes, document) of the manifest `entry` leads to,
    through nested indexes (this host's platform chosen in each)."""
    name, named, size = blob_name(entry)
    desc = entry
    data, doc = await read_json(job.source, name, named, size)
    for _depth in range(_MAX_INDEX_DEPTH):
        is_index = (desc.get("mediaType") in INDEX_TYPES or (isinstance(doc, dict) and doc.get("mediaType") in INDEX_TYPES)
                    or (isinstance(doc, dict) and "manifests" in doc and "config" not in doc))
        if not is_index:
            return desc, data, doc
        entries = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise Problem(f"index {desc['digest']} has no manifests list")
        try:
            chosen = select_platform(doc)
        except NotFound as exc:
            raise Problem(f"index {named}: {exc}") from None
        except (AttributeError, KeyError, TypeError):
            raise Problem(f"index {named}: malformed platform entries") from None
        desc = next(e for e in entries if e.get("digest") == chosen)
        name, digest, size = blob_name(desc)
        data, doc = await read_json(job.source, name, digest, size)
    raise Problem(f"index {named}: indexes nested more than {_MAX_INDEX_DEPTH} deep")


async def _image(job: Job, entry: Any) -> ImageRecord:
    _member, named, _size = blob_name(entry)
    ref = _name(job, entry)
    desc, data, doc = await _manifest(job, entry)
    manifest_digest = desc["digest"]
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
        raise Problem(f"manifest {manifest_digest} has no config and layers")

    config_name, config_digest, config_size = blob_name(doc["config"])
    layer_blobs = [blob_name(d) for d in doc["layers"]]
    config_data, config = await read_json(job.source, config_name, config_digest, config_size)
    ids = diff_ids(config, len(layer_blobs), config_digest)
    job.check_platform(config, str(ref or config_digest))

    staging = job.staging
    await staging.put(manifest_digest, len(data), chunks_of(data), f"manifest {manifest_digest}")
    await staging.put(config_digest, config_size, chunks_of(config_data), f"config {config_digest}")
    for layer_name, digest, size in layer_blobs:
        await staging.put(digest, size, chunks(job.source, layer_name), f"layer {digest}")
    chains = chain_ids(ids)
    for chain, diff_id, layer_desc, (_n, digest, _s) in zip(chains, ids, doc["layers"], layer_blobs):
        await staging.unpack(chain, diff_id, digest, str(layer_desc.get("mediaType", "")), digest)

    size = config_size + sum(s for _n, _d, s in layer_blobs)
    tags = (str(ref),) if ref is not None and ref.tag and not ref.digest else ()
    digests = (ref.repo_digest(named),) if ref is not None else ()
    return ImageRecord(id=config_digest, repo_tags=tags, repo_digests=digests, manifest_digest=manifest_digest,
                       layers=tuple(chains), size=size, created_at=time.time_ns())
