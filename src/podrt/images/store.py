"""The image store: unpacked layers keyed by chain ID, and image records.

Layout under `<root>/images`:
  blobs/sha256/<hex>     verified content (blobs.py)
  layers/<chain hex>/    `diff/` (the unpacked layer, an overlay lower dir) and `layer.json`
  l/<short>              symlink to a layer's diff: overlay options name lower
                         dirs by these short links (as containers/storage does), so
                         an image of 100+ layers stays under the page-size limit
  records/<id hex>.json  one image: its names, manifest, config and layers

Everything appears by rename only: a layer is unpacked in `layers/.tmp-*` and
renamed into place when whole, a record is written atomically. A crash leaves
temp dirs, unreferenced layers or blobs; `prepare` at start removes them, so
nothing half-made is ever used. Layers are shared: an image's layers are
those its record names, and a layer goes when no record (and, later, no
container) names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from podrt.aio import finish_in_own_thread, finish_in_thread
from podrt.host.fsutil import atomic_write, fsync_dir, usage
from podrt.host.libc import error, libc
from podrt.images.blobs import BlobStore, parse_digest
from podrt.images.pipe import ThreadPipe
from podrt.images.unpack import unpack_layer

SHORT_LEN = 26  # like containers/storage's link names


def _syncfs(path: Path) -> None:
    """syncfs(2) of the filesystem holding `path`: one call flushes a whole
    unpacked layer, where an fsync per file would cost one per entry."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            raise error("syncfs", str(path))
    finally:
        os.close(fd)


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


@attrs.frozen
class ImageRecord:
    id: str  # config digest
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    manifest_digest: str
    layers: tuple[str, ...]  # chain IDs, bottom first
    size: int  # compressed bytes of config and layers, as containerd reports
    created_at: int = 0  # ns, when it was stored
    pinned: bool = False

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ImageRecord:
        doc = json.loads(raw)
        for key in ("repo_tags", "repo_digests", "layers"):
            doc[key] = tuple(doc[key])
        return cls(**doc)


class ImageStore:
    def __init__(self, images_dir: Path) -> None:
        self.dir = images_dir
        self.blobs = BlobStore(images_dir)
        self.layers_dir = images_dir / "layers"
        self.links_dir = images_dir / "l"
        self.records_dir = images_dir / "records"
        self._records: dict[str, ImageRecord] = {}
        self._generation: str | None = None  # records/.generation when they were loaded
        self._changing = 0  # depth of changing_records() in this store
        self._changed = False  # a record was written or deleted in it
        self._links: dict[str, str] = {}  # chain ID -> its l/ link name (random per unpack), read once
        # records are read and changed in worker threads (never on the event loop): one at a time
        self._lock = threading.RLock()

    # ---- start ----------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Load records; remove what a crash left (temp dirs, ingest files,
        unreferenced layers, blobs and links). What was removed, for the log."""
        self.ensure_dirs()
        with self.exclusive(wait=True):  # a running `podrt image import` finishes first
            self.blobs.clean_ingest()
            removed = []
            for path, problem in self.load_records():
                removed.append(f"unreadable image record {path.name} set aside ({problem})")
                os.rename(path, path.with_suffix(".corrupt"))
            for path in self.records_dir.glob(".*.tmp"):
                path.unlink(missing_ok=True)
            return removed + self.collect_garbage(temp_dirs=True)

    def ensure_dirs(self) -> None:
        for d in (self.blobs.blobs, self.blobs.ingest_dir, self.layers_dir, self.links_dir, self.records_dir):
            d.mkdir(parents=True, exist_ok=True)

    # ---- records ----------------------------------------------------------------

    def refresh(self) -> None:
        """Pick up records another process wrote (`podrt image import` beside a
        running daemon): every change writes a new records/.generation token.
        (The dir's mtime would miss a second change within one clock tick.)"""
        with self._lock:
            if self._read_generation() != self._generation:
                self.load_records()

    @property
    def generation(self) -> str | None:
        """records/.generation as it was when the records in memory were read (or this process wrote them)."""
        return self._generation

    def _read_generation(self) -> str:
        try:
            return (self.records_dir / ".generation").read_text()
        except FileNotFoundError:
            return ""

    @contextlib.contextmanager
    def changing_records(self) -> Iterator[None]:
        """Held around every read-modify-write of records (a tag moving from one
        image to another): one process at a time, starting from the newest
        records, and the others reload after it. Held for milliseconds only."""
        if self._changing:
            self._changing += 1
            try:
                yield
            finally:
                self._changing -= 1
            return
        with self._lock, open(self.dir / "records.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._changing, self._changed = 1, False
            try:
                self.refresh()
                yield
            finally:
                self._changing = 0
                if self._changed:
                    token = secrets.token_hex(8)
                    (self.records_dir / ".generation").write_text(token)
                    self._generation = token

    @contextlib.contextmanager
    def exclusive(self, *, wait: bool) -> Iterator[bool]:
        """Held by an import for its whole run and by garbage collection: an
        import's blobs and layers have no record until its end. Yields whether
        it was taken (with wait=False it may not be)."""
        with open(self.dir / "store.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    def load_records(self) -> list[tuple[Path, str]]:
        """Read every record (changes nothing on disk); (path, problem) of unreadable ones."""
        self._generation = self._read_generation()  # before reading: a change meanwhile is seen next time
        bad, records = [], {}
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = ImageRecord.from_json(path.read_bytes())
                records[record.id] = record
            except (OSError, ValueError, TypeError, KeyError) as exc:
                bad.append((path, str(exc)))
        self._records = records  # swapped whole: a reader never sees a half-filled dict
        return bad

    def records(self) -> list[ImageRecord]:
        return list(self._records.values())

    def get(self, image_id: str) -> ImageRecord | None:
        return self._records.get(image_id)

    def save(self, record: ImageRecord) -> None:
        with self.changing_records():
            atomic_write(self.records_dir / f"{parse_digest(record.id)}.json", record.to_json(), mode=0o644)
            self._records[record.id] = record
            self._changed = True

    def keep(self, record: ImageRecord) -> ImageRecord:
        """Save a pulled, imported or built record, merged with what the store
        knew of that image; a tag it takes is taken from any other image (which
        stays pinned if it was: running pods may have it as their root)."""
        with self.changing_records():
            for other in self.records():
                if other.id != record.id and set(other.repo_tags) & set(record.repo_tags):
                    self.save(attrs.evolve(other, repo_tags=tuple(t for t in other.repo_tags if t not in record.repo_tags)))
            known = self.get(record.id)
            if known is not None:
                record = attrs.evolve(record, repo_tags=_union(known.repo_tags, record.repo_tags),
                                      repo_digests=_union(known.repo_digests, record.repo_digests),
                                      created_at=known.created_at, pinned=known.pinned or record.pinned)
            if record != known:
                self.save(record)
        return record

    def delete_record(self, image_id: str) -> None:
        with self.changing_records():
            (self.records_dir / f"{parse_digest(image_id)}.json").unlink(missing_ok=True)
            self._records.pop(image_id, None)
            self._changed = True

    # ---- layers ----------------------------------------------------------------

    def layer_dir(self, chain_id: str) -> Path:
        return self.layers_dir / parse_digest(chain_id)

    def has_layer(self, chain_id: str) -> bool:
        return (self.layer_dir(chain_id) / "layer.json").is_file()

    def lower_link(self, chain_id: str) -> str:
        """`l/<short>` of a stored layer, relative to the images dir. Read once
        (ImageManager reads them in a thread); a link gone since (its layer
        collected, maybe by another process, and unpacked again) is read anew."""
        link = self._links.get(chain_id)
        if link is None or not (self.links_dir / link).is_symlink():
            link = self._links[chain_id] = json.loads((self.layer_dir(chain_id) / "layer.json").read_text())["link"]
        return f"l/{link}"

    async def add_layer(self, chain_id: str, diff_id: str, digest: str, media_type: str) -> None:
        """Unpack the stored blob `digest` as layer `chain_id` (in a thread; a
        cancel waits for it, so no unpack outlives its pull)."""
        await finish_in_thread(self._add_layer, chain_id, diff_id, lambda: open(self.blobs.path(digest), "rb"),
                               media_type)

    async def add_layer_streamed(self, chain_id: str, diff_id: str, pipe: ThreadPipe, media_type: str) -> None:
        """Unpack layer `chain_id` from its blob as it downloads (pipe.py). The
        unpack reads to the pipe's end, which the puller closes only once the
        blob is verified; an aborted pipe fails the unpack and leaves nothing."""
        await finish_in_own_thread(self._add_layer, chain_id, diff_id, lambda: pipe, media_type)

    def _add_layer(self, chain_id: str, diff_id: str, open_stream: Callable[[], AbstractContextManager[BinaryIO]],
                   media_type: str) -> None:
        """Unpack into a temp dir and put it in place whole; a diff ID other
        than the config's is refused."""
        with open_stream() as stream:
            if self.has_layer(chain_id):
                return
            tmp = self.layers_dir / f".tmp-{secrets.token_hex(8)}"
            try:
                (tmp / "diff").mkdir(parents=True)
                seen = unpack_layer(stream, tmp / "diff", media_type=media_type).diff_id
                if seen != diff_id:
                    raise ValueError(f"layer content has diff ID {seen}, the image config says {diff_id}")
                link = secrets.token_hex(SHORT_LEN)[:SHORT_LEN].upper()
                (tmp / "layer.json").write_text(json.dumps({"chain_id": chain_id, "diff_id": diff_id, "link": link}))
                _syncfs(tmp)  # the layer's files are on disk before the rename makes it a layer
                os.symlink(f"../layers/{parse_digest(chain_id)}/diff", self.links_dir / link)
                try:
                    os.rename(tmp, self.layer_dir(chain_id))
                except OSError:
                    (self.links_dir / link).unlink(missing_ok=True)
                    if not self.has_layer(chain_id):  # else a concurrent pull put the same layer first
                        raise
                    return
                for d in (self.layers_dir, self.links_dir):
                    fsync_dir(d)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    # ---- garbage ---------------------------------------------------------------

    def referenced(self, extra_layers: Iterable[str] = ()) -> tuple[set[str], set[str]]:
        """(chain IDs, blob digests) that records (and `extra_layers`) still need."""
        layers, blobs = set(extra_layers), set()
        for record in self._records.values():
            layers.update(record.layers)
            blobs.add(record.id)
            blobs.update(self._manifest_blobs(record))
        return layers, blobs

    def _manifest_blobs(self, record: ImageRecord) -> list[str]:
        digests = [record.manifest_digest]
        try:
            manifest: dict[str, Any] = json.loads(self.blobs.path(record.manifest_digest).read_bytes())
            digests += [d["digest"] for d in manifest.get("layers", [])]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return digests

    def collect_garbage(self, keep: tuple[set[str], set[str]] | None = None, *, temp_dirs: bool = False) -> list[str]:
        """Remove layers, links and blobs nothing references (`keep`: the
        (chain IDs, blob digests) to keep, else what the records need); what
        went. Temp dirs are an unpack in progress, except at start."""
        layers, blobs = keep if keep is not None else self.referenced()
        keep_layers = {parse_digest(c) for c in layers}
        removed = []
        for entry in self.layers_dir.iterdir():
            if entry.name.startswith(".tmp-") and not temp_dirs:
                continue
            if entry.name not in keep_layers:
                doomed = entry if entry.name.startswith(".") else entry.with_name(f".tmp-gc-{entry.name}")
                os.rename(entry, doomed)  # gone from layers/ at once: a half-deleted layer never looks whole
                shutil.rmtree(doomed, ignore_errors=True)
                removed.append(f"layer {entry.name[:12]}")
        for link in self.links_dir.iterdir():
            if not link.exists():  # dangling: its layer went
                link.unlink(missing_ok=True)
        for digest in self.blobs.digests():
            if digest not in blobs:
                self.blobs.delete(digest)
                removed.append(f"blob {digest[7:19]}")
        return removed

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) of the whole image store, for ImageFsInfo."""
        return usage([self.dir])


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))
