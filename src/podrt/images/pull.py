"""Pulling one image: endpoints in registries.conf order, manifest (an index
resolved to this host's platform), config, then layers downloaded in parallel
(bounded) into the blob store and unpacked into the layer store.

The record keeps the name the user asked for, never a mirror's. Every blob is
verified (blobs.py), every layer's diff ID checked against the config; a
layer stalls the pull when no byte arrives for `progress_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from podrt import errors
from podrt.aio import await_shielded
from podrt.config import ConfigError
from podrt.images import auth, registries
from podrt.images.blobs import BlobMismatch, chunks_of, parse_digest
from podrt.images.pipe import ThreadPipe
from podrt.images.registry import INDEX_TYPES, Credentials, Manifest, RegistryClient, RegistryError
from podrt.images.store import ImageRecord, ImageStore, chain_ids
from podrt.images.unpack import CorruptLayer, UnsafeLayer
from podrt.oci.reference import Reference

log = logging.getLogger(__name__)

MAX_CONFIG = 8 * 1024 * 1024  # an image config is small: it is read whole
PROGRESS_EVERY = 10.0  # seconds between progress lines of one blob
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
    global_auth_file: str = ""


class Puller:
    def __init__(self, store: ImageStore, settings: PullSettings, session: aiohttp.ClientSession) -> None:
        self.store, self.settings, self.session = store, settings, session
        self._downloads = asyncio.Semaphore(settings.max_concurrent_downloads)

    async def _manifest(self, ref: Reference, creds: Credentials | None) -> tuple[RegistryClient, str, Manifest]:
        """The first endpoint that has the image: (client, repository there, manifest).
        Mirrors come first; a blocked registry offers only its mirrors. The
        request's credentials go to every endpoint (as in CRI-O); without them,
        each endpoint gets what the global auth file holds for its own host."""
        try:
            conf = await asyncio.to_thread(registries.load, self.settings.registries_conf)  # files: off the loop
        except ConfigError as exc:
            raise errors.FailedPrecondition(str(exc)) from None
        failures: list[str] = []
        endpoints = registries.resolve(conf, ref.name, by_digest=ref.digest is not None)
        for n, ep in enumerate(endpoints, 1):
            host = DOCKER_HUB_API if ep.registry_host == "docker.io" else ep.registry_host
            try:
                tls = None if ep.insecure else await asyncio.to_thread(
                    registries.ssl_context, self.settings.certs_dirs, ep.registry_host)
            except (OSError, ssl.SSLError) as exc:  # an unreadable or invalid certs.d file
                raise errors.FailedPrecondition(f"certs.d for {ep.registry_host}: {exc}") from None
            try:
                ep_creds = creds if creds is not None else await asyncio.to_thread(
                    auth.for_host, self.settings.global_auth_file, ep.registry_host)
            except ConfigError as exc:
                raise errors.FailedPrecondition(str(exc)) from None
            client = RegistryClient(self.session, host, insecure=ep.insecure, credentials=ep_creds, ssl_context=tls)
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

    async def pull(self, ref: Reference, creds: Credentials | None = None) -> ImageRecord:
        started = time.monotonic()
        client, repo, manifest = await self._manifest(ref, creds)
        named = manifest.digest  # what the name resolved to (an index, for multi-platform images): the repo digest
        if manifest.media_type in INDEX_TYPES:
            try:
                chosen = select_platform(_json(manifest.body, f"{ref}: index"))
            except (KeyError, TypeError, AttributeError):
                raise RegistryError(f"{ref}: malformed index") from None
            manifest = await client.manifest(repo, chosen)
        doc = _json(manifest.body, f"{ref}: manifest")
        if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            raise RegistryError(f"{ref}: {manifest.media_type or 'manifest'} without config and layers (schema 1 is not supported)")
        config_digest, config_size, _ = _descriptor(doc["config"], ref)
        layers = [_descriptor(d, ref) for d in doc["layers"]]
        if config_size > MAX_CONFIG:
            raise RegistryError(f"{ref}: image config of {config_size} bytes (at most {MAX_CONFIG})")
        await self.store.blobs.fetch_once(manifest.digest, lambda: self.store.blobs.write(
            manifest.digest, len(manifest.body), chunks_of(manifest.body)))
        config_path = await self._blob(client, repo, config_digest, config_size, ref)
        config = _json(await asyncio.to_thread(config_path.read_bytes), f"{ref}: image config")
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers) or not all(map(_is_digest, diff_ids)):
            raise RegistryError(f"{ref}: the config's rootfs.diff_ids do not match the {len(layers)} layers")
        chains = chain_ids(diff_ids)
        missing = sum(not self.store.has_layer(c) for c in chains)
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the others
                for (digest, size, media_type), chain, diff_id in zip(layers, chains, diff_ids):
                    group.create_task(self._layer(client, repo, digest, size, media_type, chain, diff_id, ref))
        except ExceptionGroup as failed:  # the first layer's error is the pull's (its status, its message)
            raise failed.exceptions[0] from None
        size = config_size + sum(s for _, s, _ in layers)
        record = ImageRecord(id=config_digest, repo_tags=(str(ref),) if ref.tag and not ref.digest else (),
                             repo_digests=(ref.repo_digest(named),), manifest_digest=manifest.digest,
                             layers=tuple(chains), size=size, created_at=time.time_ns())
        log.log(logging.INFO if missing else logging.DEBUG, "pulled %s (%s, %d layers, %d of them new, %.1f MB) in %.2fs",
                ref, record.id[:19], len(layers), missing, size / 1e6, time.monotonic() - started)
        return record

    async def _blob(self, client: RegistryClient, repo: str, digest: str, size: int, ref: Reference) -> Path:
        async def fetch() -> Path:
            async with self._downloads:
                return await self._download(client, repo, digest, size, ref)

        return await self.store.blobs.fetch_once(digest, fetch)

    async def _download(self, client: RegistryClient, repo: str, digest: str, size: int, ref: Reference,
                        tee: ThreadPipe | None = None) -> Path:
        """The blob into the store, verified; each chunk also goes to `tee` (an
        unpack) as it arrives. The caller holds a download slot."""
        started = time.monotonic()
        chunks = self._watched(client.blob(repo, digest), digest, ref, size)
        try:
            path = await self.store.blobs.write(digest, size, chunks if tee is None else _teed(chunks, tee))
        except BlobMismatch as exc:
            raise RegistryError(f"{ref}: {exc}") from None
        seconds = time.monotonic() - started
        log.info("pull %s: blob %s, %.1f MB in %.2fs (%.0f MB/s)", ref, digest[7:19], size / 1e6, seconds,
                 size / 1e6 / max(seconds, 1e-6))
        return path

    async def _watched(self, chunks: AsyncIterator[bytes], digest: str, ref: Reference,
                       size: int) -> AsyncIterator[bytes]:
        """`chunks`, failing when none arrives for progress_timeout, with a
        progress line every PROGRESS_EVERY seconds for a long blob."""
        timeout = self.settings.progress_timeout
        iterator = chunks.__aiter__()
        got, started = 0, time.monotonic()
        report = started + PROGRESS_EVERY
        while True:
            try:
                chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise errors.DeadlineExceeded(f"blob {digest}: no progress for {timeout:g}s") from None
            got += len(chunk)
            if (now := time.monotonic()) >= report:
                report = now + PROGRESS_EVERY
                log.info("pull %s: blob %s, %.1f of %.1f MB (%.0f%%) after %.0fs", ref, digest[7:19], got / 1e6,
                         size / 1e6, 100 * got / max(size, 1), now - started)
            yield chunk

    async def _layer(self, client: RegistryClient, repo: str, digest: str, size: int, media_type: str, chain: str,
                     diff_id: str, ref: Reference) -> None:
        """The layer in the store: unpacked while its blob downloads when this
        pull is the one downloading it, else from the stored blob."""
        if self.store.has_layer(chain):
            return
        streamed = False

        async def download_and_unpack() -> Path:
            nonlocal streamed
            async with self._downloads:  # the unpack's thread too starts only with a slot
                pipe = ThreadPipe(asyncio.get_running_loop())
                unpack = asyncio.ensure_future(self.store.add_layer_streamed(chain, diff_id, pipe, media_type))
                try:
                    path = await self._download(client, repo, digest, size, ref, tee=pipe)
                except BaseException:
                    pipe.abort()
                    with contextlib.suppress(Exception):  # PipeAborted: the download's error is the one to report
                        await await_shielded(unpack)  # its temp dir is gone before we return
                    raise
                pipe.close()
            await self._unpacked(unpack, digest, ref)
            streamed = True
            return path

        await self.store.blobs.fetch_once(digest, download_and_unpack)
        if not streamed:
            await self._unpacked(self.store.add_layer(chain, diff_id, digest, media_type), digest, ref)

    async def _unpacked(self, unpack: Awaitable[None], digest: str, ref: Reference) -> None:
        try:
            await unpack
        except (UnsafeLayer, CorruptLayer, ValueError) as exc:
            raise errors.InvalidArgument(f"{ref}: layer {digest}: {exc}") from None


async def _teed(chunks: AsyncIterator[bytes], pipe: ThreadPipe) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        await pipe.put(chunk)
        yield chunk


def _json(data: bytes, what: str) -> dict[str, Any]:
    """A registry document; RegistryError (not a traceback) for anything else."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return doc


def _is_digest(value: Any) -> bool:
    try:
        parse_digest(value)
        return True
    except (ValueError, TypeError):
        return False


def _descriptor(desc: Any, ref: Reference) -> tuple[str, int, str]:
    """(digest, size, media type) of an OCI descriptor, checked."""
    if not isinstance(desc, dict) or not _is_digest(desc.get("digest")) or type(desc.get("size")) is not int or desc["size"] < 0:
        raise RegistryError(f"{ref}: malformed descriptor {str(desc)[:200]}")
    return desc["digest"], desc["size"], str(desc.get("mediaType", ""))
