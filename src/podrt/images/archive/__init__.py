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
* a `docker save` archive (`manifest.json`), named by its RepoTags; its
  registry manifest is synthesised (docker.py).

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

Modules: source (reading the archive), staging (what the import put into the
store), job (one import and the checks both formats make), oci and docker
(the two formats).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from podrt.errors import InvalidArgument
from podrt.images.archive import docker, oci
from podrt.images.archive.job import Job
from podrt.images.archive.oci import ref_name_reference
from podrt.images.archive.source import Problem, open_source
from podrt.images.archive.staging import Staging
from podrt.images.store import ImageRecord, ImageStore
from podrt.oci import reference

__all__ = ["import_archive", "ref_name_reference"]

log = logging.getLogger(__name__)


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
        source = await asyncio.to_thread(open_source, path)
    except Problem as exc:
        raise InvalidArgument(f"{label}: {exc}") from None
    try:
        return await _run(Job(source, Staging(store), label, ref))
    finally:
        await asyncio.to_thread(source.close)


def _import_name(name: str) -> reference.Reference:
    """The reference `name` gives an import: normalised like a pull's, and
    without a digest (the archive's manifest decides that, not its reader)."""
    ref = reference.parse(name)
    if ref.digest is not None:
        raise InvalidArgument(f'invalid name "{name}" for an imported image: a name to give takes a tag, not a digest')
    return ref


async def _run(job: Job) -> list[ImageRecord]:
    """The images of the archive, stored with their records; on any error
    what the import added and no record needs is removed again."""
    started = time.monotonic()
    store = job.staging.store
    try:
        try:
            if await asyncio.to_thread(job.source.has, "index.json"):
                kind, images = "OCI image layout", await oci.images(job)
            elif await asyncio.to_thread(job.source.has, "manifest.json"):
                kind, images = "docker save archive", await docker.images(job)
            else:
                raise InvalidArgument(f"{job.label}: neither index.json (an OCI image layout) nor manifest.json "
                                      "(a docker save archive) in it")
        except Problem as exc:
            raise InvalidArgument(f"{job.label}: {exc}") from None
        if not images:
            raise InvalidArgument(f"{job.label}: the {kind} lists no image")
        ids = list(dict.fromkeys(r.id for r in images))
        for record in images:
            store.keep(record)
    except BaseException:
        await asyncio.to_thread(job.staging.roll_back)
        raise
    stored = [r for r in map(store.get, ids) if r is not None]
    log.info("imported %d image(s) from %s (%s) in %.2fs", len(stored), job.label, kind, time.monotonic() - started)
    return stored
