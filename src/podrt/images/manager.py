"""Images: pull (one shared pull per reference), look up by name or ID, list,
remove, and the store's usage. cri/image.py calls this; it knows no gRPC.

A tag names one image at a time: pulling `app:v1` again when it moved gives
the tag to the new image (the old one keeps its digests, as in containerd).
Garbage (layers and blobs no record needs) is collected after a removal,
but never while a pull runs: a pull's blobs and layers have no record yet.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from podrt.aio import SharedTask, finish_in_thread
from podrt.config import Config
from podrt.errors import FailedPrecondition
from podrt.images.pull import Puller, PullSettings
from podrt.images.registry import Credentials
from podrt.images.store import ImageRecord, ImageStore
from podrt.images.watch import RecordsWatch
from podrt.oci.reference import Reference, looks_like_image_id, parse, parse_id

log = logging.getLogger(__name__)


@attrs.frozen
class ImageView:
    record: ImageRecord
    config: dict[str, Any]  # the image config blob (OCI image-spec)

    @property
    def user(self) -> str:
        inner = self.config.get("config")  # a registry may send anything here
        return str(inner.get("User", "") or "") if isinstance(inner, dict) else ""


class ImageManager:
    def __init__(self, config: Config, images_dir: Path) -> None:
        self.config = config
        self.store = ImageStore(images_dir)
        self._pulls: dict[tuple[str, Credentials | None], SharedTask[ImageRecord]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._gc_pending = False
        self._configs: dict[str, dict[str, Any]] = {}
        self._active_pulls = 0
        self._gc_idle = asyncio.Event()
        self._gc_idle.set()
        self._removing: set[str] = set()  # IDs RemoveImage is deleting (past its users check)
        # image ID -> (the records' generation, its layers' l/ links top first) as the last look in a
        # thread found them (find, keep); None: a layer was missing then. A generation later, records
        # may have gone and come back with their layers unpacked anew: looked up again.
        self._links: dict[str, tuple[str | None, tuple[str, ...] | None]] = {}
        self._watched = RecordsWatch(self.store.records_dir)  # while fresh(), look-ups need no thread
        # who runs from an image ("pod sandbox <id> (<name>)", later containers), set by the daemon
        self.users: Callable[[str], list[str]] = lambda _image_id: []

    async def start(self) -> None:
        removed = await asyncio.to_thread(self.store.prepare)
        if removed:
            log.info("image store: removed what no image needs: %s", ", ".join(removed[:20]))
        self._watched.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))

    async def close(self) -> None:
        self._watched.close()
        if self._session is not None:
            await self._session.close()

    # ---- look up -------------------------------------------------------------

    async def find(self, text: str) -> ImageRecord | None:
        """By ID (`sha256:<hex>` or the bare hex) or by any name it has; its
        config and layer links read (in a thread) for view() and layer_links().
        From memory, with no trip to a thread, while the records are the
        store's and the image's files were read (CreateContainer, ImageStatus)."""
        if self._watched.fresh():
            record = self._lookup(text)
            if record is None or (self._links_known(record) and record.id in self._configs):
                return record
        return await self._watched.read(self._find_now, text)

    def _find_now(self, text: str) -> ImageRecord | None:
        self.store.refresh()
        record = self._lookup(text)
        if record is not None:
            self._read_files(record)
        return record

    def _read_files(self, record: ImageRecord) -> None:
        """Its config and layer links, for view() and layer_links() on the loop."""
        self._read_config(record)
        links: tuple[str, ...] | None = None
        with contextlib.suppress(OSError, ValueError, KeyError):  # a layer missing: None, and whole() says so too
            links = tuple(self.store.lower_link(c) for c in reversed(record.layers))
        self._links[record.id] = (self.store.generation, links if links is not None and self.whole(record) else None)

    def _links_known(self, record: ImageRecord) -> bool:
        found = self._links.get(record.id)
        return found is not None and found[0] == self.store.generation

    def layer_links(self, record: ImageRecord) -> tuple[str, ...] | None:
        """The `l/` links of a found image's layers, top first, as found when
        it was last looked up in a thread; None: a layer was missing then."""
        found = self._links.get(record.id)
        return found[1] if found is not None else None

    def _lookup(self, text: str) -> ImageRecord | None:
        if looks_like_image_id(text):
            return self.store.get(parse_id(text))
        ref = parse(text)
        want = str(ref)
        for record in self.store.records():
            if want in record.repo_tags or want in record.repo_digests:
                return record
        return None

    def available(self, image_id: str) -> bool:
        """Still stored and not being removed: checked, with no await between,
        where a creation marks the images it uses (users() then sees them)."""
        return image_id not in self._removing and self.store.get(image_id) is not None

    def view(self, record: ImageRecord) -> ImageView:
        """The record with its config (read by find, list or keep, in a thread)."""
        return ImageView(record, self._read_config(record))

    def _read_config(self, record: ImageRecord) -> dict[str, Any]:
        """A config never changes for an ID, so it is read once."""
        config = self._configs.get(record.id)
        if config is None:
            try:
                doc = json.loads(self.store.blobs.path(record.id).read_bytes())
            except (OSError, ValueError):
                doc = {}
            config = self._configs[record.id] = doc if isinstance(doc, dict) else {}
        return config

    async def list(self, text: str = "") -> list[ImageRecord]:
        if text:
            found = await self.find(text)
            return [found] if found else []
        records = self.store.records()
        if self._watched.fresh() and all(r.id in self._configs for r in records):
            return records
        return await self._watched.read(self._list_now)

    def _list_now(self) -> builtins.list[ImageRecord]:
        self.store.refresh()
        records = self.store.records()
        for record in records:
            self._read_config(record)
        return records

    async def keep(self, record: ImageRecord) -> ImageRecord:
        """store.keep (a lock, fsyncs) in a thread; a cancel waits for it."""
        return await finish_in_thread(self._keep_now, record)

    def _keep_now(self, record: ImageRecord) -> ImageRecord:
        kept = self.store.keep(record)
        self._read_files(kept)
        return kept

    # ---- pull -------------------------------------------------------------

    async def pull(self, text: str, creds: Credentials | None = None) -> ImageRecord:
        """`creds` None: what the global auth file holds for each registry
        asked. Pulls share one download only when their credentials agree."""
        ref = parse(text)
        if ref.digest is not None and (present := await self.find(str(ref))) is not None and self.whole(present):
            return present  # a digest names fixed content: nothing to ask the registry
        key = (str(ref), creds)
        shared = self._pulls.get(key)
        if shared is None or shared.done():
            shared = self._pulls[key] = SharedTask(self._pull(ref, creds), name=f"pull {ref}")
            shared.add_done_callback(lambda _t: self._pulls.pop(key, None) if self._pulls.get(key) is shared else None)
        return await shared.wait()

    def whole(self, record: ImageRecord) -> bool:
        """Every layer still on disk (else the pull fetches what is missing)."""
        return all(self.store.has_layer(chain) for chain in record.layers)

    async def _pull(self, ref: Reference, creds: Credentials | None) -> ImageRecord:
        assert self._session is not None, "start() first"
        image = self.config.image
        settings = PullSettings(Path(image.registries_conf), tuple(Path(d) for d in image.certs_dirs),
                                image.max_concurrent_downloads, image.pull_progress_timeout, image.global_auth_file)
        await self._gc_idle.wait()  # a collection running now would take this pull's unrecorded blobs
        self._active_pulls += 1  # no await between the wait and this: no collection starts in between
        try:
            pulled = await Puller(self.store, settings, self._session).pull(ref, creds)
            return await self.keep(pulled)
        finally:
            self._active_pulls -= 1
            if self._gc_pending and not self._active_pulls:
                await self._collect_garbage()

    # ---- remove -------------------------------------------------------------

    async def remove(self, text: str) -> None:
        """Unknown images succeed (the kubelet relies on it); pinned ones and
        ones something runs from are refused (as CRI-O does)."""
        record = await self.find(text)
        if record is None:
            return
        if record.pinned:
            raise FailedPrecondition(f"image {text} ({record.id}) is pinned and cannot be removed")
        users = self.users(record.id)
        if users:
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            raise FailedPrecondition(f"image {text} ({record.id}) is in use by {users[0]}{more}")
        self._removing.add(record.id)  # from here no creation takes it (they look it up in threads)
        try:
            await finish_in_thread(self.store.delete_record, record.id)
        finally:
            self._removing.discard(record.id)
        self._configs.pop(record.id, None)
        self._links.pop(record.id, None)  # pulled again, its layers are unpacked anew
        await self._collect_garbage()

    async def _collect_garbage(self) -> None:
        """Never beside a pull (its blobs and layers have no record yet): with
        pulls running it is left pending for the last one to finish."""
        if self._active_pulls or not self._gc_idle.is_set():
            self._gc_pending = True
            return
        self._gc_pending = False
        self._gc_idle.clear()  # before any await: no pull starts until the collection is over
        try:
            removed = await finish_in_thread(self._collect_garbage_now)
        finally:
            self._gc_idle.set()
        if removed:
            log.info("image store: freed %s", ", ".join(removed[:20]))

    def _collect_garbage_now(self) -> builtins.list[str]:
        """Blocking; skipped (and left pending) while an import holds the store."""
        self.store.refresh()
        keep = self.store.referenced()
        with self.store.exclusive(wait=False) as mine:
            if not mine:
                self._gc_pending = True
                return []
            return self.store.collect_garbage(keep=keep)

    async def usage(self) -> tuple[int, int]:
        return await asyncio.to_thread(self.store.usage)
