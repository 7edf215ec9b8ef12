"""A `docker save` archive (`manifest.json`: Config, RepoTags, Layers, whose
paths are files of the archive: `<id>/layer.tar` in the old format,
`blobs/sha256/<hex>` from docker 25 on). There is no registry manifest, so one
is synthesised (config and layers with digests, sizes and media types) and
stored as a blob: the store's garbage collector finds an image's layer blobs
through its manifest. Its RepoTags name it (docker's familiar names:
`busybox:1` is `docker.io/library/busybox:1`)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from podrt.errors import InvalidArgument
from podrt.images.archive.job import Job, diff_ids
from podrt.images.archive.source import Problem, chunks, normalise, read_json
from podrt.images.blobs import chunks_of, digest_of
from podrt.images.store import ImageRecord, chain_ids
from podrt.oci import reference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_BLOB_PATH = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_CONFIG_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})\.json")  # old docker save: <config hex>.json


async def images(job: Job) -> list[ImageRecord]:
    _data, doc = await read_json(job.source, "manifest.json")
    if not isinstance(doc, list):
        raise Problem("manifest.json is not a list of images")
    job.one_image("docker save archive", len({json.dumps(e.get("Config") if isinstance(e, dict) else e) for e in doc}))
    return [await _image(job, n, entry) for n, entry in enumerate(doc)]


async def _image(job: Job, n: int, entry: Any) -> ImageRecord:
    if (not isinstance(entry, dict) or not isinstance(entry.get("Config"), str)
            or not isinstance(entry.get("Layers"), list) or not all(isinstance(p, str) for p in entry["Layers"])):
        raise Problem(f"manifest.json entry {n} has no Config and Layers")
    tags = [str(job.name)] if job.name is not None else _repo_tags(n, entry)

    config_path = normalise(entry["Config"])
    config_data, config = await read_json(job.source, config_path)
    config_digest = digest_of(config_data)
    named = _BLOB_PATH.fullmatch(config_path) or _CONFIG_NAME.fullmatch(config_path)
    if named and named.group(1) != config_digest[7:]:
        raise Problem(f"config {config_path} has digest {config_digest}, not the one its name gives")
    layer_paths = [normalise(p) for p in entry["Layers"]]
    ids = diff_ids(config, len(layer_paths), config_path)
    job.check_platform(config, tags[0] if tags else config_digest)
    staging = job.staging
    await staging.put(config_digest, len(config_data), chunks_of(config_data), f"config {config_path}")

    descs: list[dict[str, Any]] = []
    for path in layer_paths:
        if (blob := _BLOB_PATH.fullmatch(path)) is not None:  # docker 25+: the path names the digest
            digest = f"sha256:{blob.group(1)}"
            await staging.put(digest, None, chunks(job.source, path), f"layer {path}")
        else:
            digest = await staging.put_computed(chunks(job.source, path))
        descs.append({"mediaType": await staging.media_type(digest), "digest": digest,
                      "size": staging.store.blobs.path(digest).stat().st_size})
    chains = chain_ids(ids)
    for chain, diff_id, desc, path in zip(chains, ids, descs, layer_paths):
        await staging.unpack(chain, diff_id, desc["digest"], desc["mediaType"], path)

    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_data)},
        "layers": descs,
    }, separators=(",", ":")).encode()
    manifest_digest = digest_of(manifest)
    await staging.put(manifest_digest, len(manifest), chunks_of(manifest), "synthesised manifest")
    return ImageRecord(id=config_digest, repo_tags=tuple(dict.fromkeys(tags)), repo_digests=(),
                       manifest_digest=manifest_digest, layers=tuple(chains),
                       size=len(config_data) + sum(d["size"] for d in descs), created_at=time.time_ns())


def _repo_tags(n: int, entry: dict[str, Any]) -> list[str]:
    """The names RepoTags gives, normalised (docker's familiar names are docker.io's)."""
    tags_in = entry.get("RepoTags") or []
    if not isinstance(tags_in, list) or not all(isinstance(t, str) for t in tags_in):
        raise Problem(f"manifest.json entry {n}: RepoTags is not a list of names")
    tags: list[str] = []
    for text in tags_in:
        try:
            ref = reference.parse(text)
        except InvalidArgument as exc:
            raise Problem(str(exc)) from None
        if ref.digest is None:
            tags.append(str(ref))
    return tags
