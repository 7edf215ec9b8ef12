"""Pulling one image: endpoints in registries.conf order, manifest (an index
resolved to this host's platform), config, then layers downloaded in parallel
(bounded) into the blob store and unpacked into the layer store.

The record keeps the name the user asked for, never a mirror's. Every blob is
verified (blobs.py), every layer's diff ID checked against the config; a
layer stalls the pull when no byte arrives for `progress_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import attrs

from podrt import errors
from podrt.images import registries
from podrt.images.blobs import BlobMismatch
from podrt.images.reference import Reference
from podrt.images.registry import INDEX_TYPES, Credentials, Manifest, RegistryClient, RegistryError
from podrt.images.store import ImageRecord, ImageStore, chain_ids
from podrt.images.unpack import CorruptLayer, UnsafeLayer

log = logging.getLogger(__name__)

DOCKER_HUB_API = "registry-1.docker.io"  # docker.io names; the API lives here
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) in OCI terms."""
    machine = platform.machine()
    return "linux", _ARCH.get(machine, machine), {"armv7l": "v7", "armv6l": "v6"}.get(machine, "")


def select_platform(index: dict[str, Any], want: tuple[str, str, str] | None = None) -> str:
    """The digest of the index entry for this host (variant only when it has one)."""
    os_, arch, variant = want or host_platform()
    for entry in index.get("manifests", []):
        p = entry.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch and (not variant or p.get("variant", variant) == variant):
            return str(entry["digest"])
    offered = ", ".join(f"{(e.get('platform') or {}).get('os')}/{(e.get('platform') or {}).get('architecture')}"
                        for e in index.get("manifests", []))
    raise errors.NotFound(f"no image for {os_}/{arch} in the index (it has {offered or 'nothing'})")


@attrs.frozen
class PullSettings:
    registries_conf: Path
    certs_dirs: tuple[Path, ...]
    max_concurrent_downloads: int = 3
    progress_timeout: float = 300.0


class Puller:
    def __init__(self, store: ImageStore, settings: PullSettings, session: aiohttp.ClientSession) -> None:
        self.store, self.settings, self.session = store, settings, session
        self._downloads = asyncio.Semaphore(settings.max_concurrent_downloads)

    async def _manifest(self, ref: Reference, creds: Credentials) -> tuple[RegistryClient, str, Manifest]:
        """The first endpoint that has the image: (client, repository there, manifest).
        Mirrors come first; a blocked registry offers only its mirrors."""
        conf = registries.load(self.settings.registries_conf)
        failures: list[str] = []
        endpoints = registries.resolve(conf, ref.name, by_digest=ref.digest is not None)
        for n, ep in enumerate(endpoints, 1):
            host = DOCKER_HUB_API if ep.registry_host == "docker.io" else ep.registry_host
            client = RegistryClient(self.session, host, insecure=ep.insecure, credentials=creds,
                                    ssl_context=None if ep.insecure else registries.ssl_context(self.settings.certs_dirs, ep.registry_host))
            try:
                return client, ep.repository, await client.manifest(ep.repository, ref.digest or ref.tag or "latest")
            except (RegistryError, errors.NotFound) as exc:
                if n == len(endpoints):
                    if failures:
                        raise type(exc)(f"{exc} (tried first: {'; '.join(failures)})") from None
                    raise
                failures.append(str(exc))
                log.info("%s for %s failed (%s); trying the next endpoint", ep.registry_host, ref, exc)
        raise AssertionError("resolve returns at least one endpoint or raises")

    async def pull(self, ref: Reference, creds: Credentials = Credentials()) -> ImageRecord:
        started = time.monotonic()
        client, repo, manifest = await self._manifest(ref, creds)
        named = manifest.digest  # what the name resolved to (an index, for multi-platform images): the repo digest
        if manifest.media_type in INDEX_TYPES:
            manifest = await client.manifest(repo, select_platform(json.loads(manifest.body)))
        doc = json.loads(manifest.body)
        if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            raise RegistryError(f"{ref}: {manifest.media_type or 'manifest'} without config and layers (schema 1 is not supported)")
        await self.store.blobs.fetch_once(manifest.digest, lambda: self.store.blobs.write(
            manifest.digest, len(manifest.body), _once(manifest.body)))
        config_desc = doc["config"]
        config_path = await self._blob(client, repo, config_desc, ref)
        config = json.loads(config_path.read_bytes())
        diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
        layers = doc["layers"]
        if len(diff_ids) != len(layers):
            raise RegistryError(f"{ref}: {len(layers)} layers but {len(diff_ids)} diff IDs in the config")
        chains = chain_ids(diff_ids)
        await asyncio.gather(*(self._layer(client, repo, desc, chain, diff_id, ref)
                               for desc, chain, diff_id in zip(layers, chains, diff_ids)))
        size = int(config_desc.get("size", 0)) + sum(int(d.get("size", 0)) for d in layers)
        record = ImageRecord(id=config_desc["digest"], repo_tags=(str(ref),) if ref.tag and not ref.digest else (),
                             repo_digests=(ref.repo_digest(named),), manifest_digest=manifest.digest,
                             layers=tuple(chains), size=size, created_at=time.time_ns())
        log.info("pulled %s (%s, %d layers, %.1f MB) in %.2fs", ref, record.id[:19], len(layers), size / 1e6,
                 time.monotonic() - started)
        return record

    async def _blob(self, client: RegistryClient, repo: str, desc: dict[str, Any], ref: Reference) -> Path:
        digest, size = str(desc["digest"]), int(desc["size"])

        async def fetch() -> Path:
            async with self._downloads:
                started = time.monotonic()
                try:
                    path = await self.store.blobs.write(digest, size, self._watched(client.blob(repo, digest), digest))
                except BlobMismatch as exc:
                    raise RegistryError(f"{ref}: {exc}") from None
                seconds = time.monotonic() - started
                log.info("pull %s: blob %s, %.1f MB in %.2fs (%.0f MB/s)", ref, digest[7:19], size / 1e6, seconds,
                         size / 1e6 / max(seconds, 1e-6))
                return path

        return await self.store.blobs.fetch_once(digest, fetch)

    async def _watched(self, chunks: AsyncIterator[bytes], digest: str) -> AsyncIterator[bytes]:
        """`chunks`, failing when none arrives for progress_timeout."""
        timeout = self.settings.progress_timeout
        iterator = chunks.__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise errors.DeadlineExceeded(f"blob {digest}: no progress for {timeout:g}s") from None
            yield chunk

    async def _layer(self, client: RegistryClient, repo: str, desc: dict[str, Any], chain: str, diff_id: str,
                     ref: Reference) -> None:
        if self.store.has_layer(chain):
            return
        await self._blob(client, repo, desc, ref)
        try:
            await self.store.add_layer_from_blob(chain, diff_id, str(desc["digest"]), str(desc.get("mediaType", "")))
        except (UnsafeLayer, CorruptLayer, ValueError) as exc:
            raise errors.InvalidArgument(f"{ref}: layer {desc['digest']}: {exc}") from None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
