"""Image records shared by two processes (the daemon and `podrt image import`):
each change is seen by the other, and tag moves start from the newest records.
Two ImageStore objects on one directory stand for the two processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from podrt.cri.image import image_message
from podrt.images.manager import ImageView
from podrt.images.store import ImageRecord, ImageStore


def _record(n: int, *tags: str) -> ImageRecord:
    return ImageRecord(id=f"sha256:{n:064x}", repo_tags=tags, repo_digests=(), manifest_digest=f"sha256:{n + 1000:064x}",
                       layers=(), size=1)


def _store(path: Path) -> ImageStore:
    store = ImageStore(path)
    store.ensure_dirs()
    store.load_records()
    return store


def test_every_change_is_seen_even_many_within_one_clock_tick(tmp_path: Path) -> None:
    daemon, importer = _store(tmp_path), _store(tmp_path)
    for n in range(40):  # quicker than the filesystem's timestamp tick: a dir mtime would miss some
        importer.save(_record(n, f"r/img:{n}"))
        daemon.refresh()
        assert daemon.get(_record(n).id) is not None, n
    importer.delete_record(_record(0).id)
    daemon.refresh()
    assert daemon.get(_record(0).id) is None


def test_a_tag_moves_from_an_image_the_other_process_stored(tmp_path: Path) -> None:
    daemon, importer = _store(tmp_path), _store(tmp_path)  # both loaded before either wrote
    daemon.keep(_record(1, "r/app:v1"))
    importer.keep(_record(2, "r/app:v1"))  # knows record 1 only by reloading under the lock
    daemon.refresh()
    for store in (daemon, importer):
        assert store.get(_record(1).id).repo_tags == ()  # type: ignore[union-attr]
        assert store.get(_record(2).id).repo_tags == ("r/app:v1",)  # type: ignore[union-attr]


def test_changes_wait_for_the_other_process(tmp_path: Path) -> None:
    daemon, importer = _store(tmp_path), _store(tmp_path)
    entered = threading.Event()
    done: list[float] = []

    def other() -> None:
        entered.wait()
        importer.keep(_record(2, "r/app:v1"))
        done.append(time.monotonic())

    worker = threading.Thread(target=other)
    worker.start()
    with daemon.changing_records():
        entered.set()
        time.sleep(0.2)
        daemon.save(_record(1, "r/app:v1"))
        released = time.monotonic()
    worker.join(5)
    assert done and done[0] >= released  # it waited, then moved the tag it found
    importer.refresh()
    assert importer.get(_record(1).id).repo_tags == ()  # type: ignore[union-attr]


def test_keeping_an_unchanged_record_writes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.keep(_record(1, "r/app:v1"))
    path = tmp_path / "records" / f"{1:064x}.json"
    before = (path.stat().st_mtime_ns, (tmp_path / "records" / ".generation").read_text())
    time.sleep(0.01)
    store.keep(_record(1, "r/app:v1"))  # a PullImage by tag of an image already there
    assert (path.stat().st_mtime_ns, (tmp_path / "records" / ".generation").read_text()) == before


@pytest.mark.parametrize("user, uid, name", [("1000", 1000, ""), ("1000:10", 1000, ""), ("app", None, "app"),
                                             ("²", None, "²"), ("99999999999999999999", None, "99999999999999999999")])
def test_an_images_user_as_listimages_reports_it(user: str, uid: int | None, name: str) -> None:
    """A number runc can take is the uid; anything else (a name, "²", out of range) the username, never an exception."""
    msg = image_message(ImageView(ImageRecord("sha256:i", (), (), "", (), 0), {"config": {"User": user}}))
    assert (msg.uid.value if msg.is_set("uid") and msg.uid is not None else None, msg.username) == (uid, name)


def _layered(store: ImageStore, n: int, tag: str) -> ImageRecord:
    """A record with one layer on disk (its layer.json and l/ link), as a pull leaves it."""
    import json

    chain = f"sha256:{n + 2000:064x}"
    layer = store.layer_dir(chain)
    (layer / "diff").mkdir(parents=True)
    (layer / "layer.json").write_text(json.dumps({"chain_id": chain, "link": f"LINK{n}"}))
    (store.links_dir / f"LINK{n}").symlink_to(layer / "diff")
    return ImageRecord(id=f"sha256:{n:064x}", repo_tags=(tag,), repo_digests=(), manifest_digest=f"sha256:{n + 1000:064x}",
                       layers=(chain,), size=1)


async def test_a_look_up_needs_no_thread_while_no_record_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateContainer and ImageStatus look images up from memory while the
    records dir saw no write; a write by the other process is seen at the next
    look-up, as before: `podrt image import` beside a running daemon."""
    import asyncio

    from podrt.config import Config
    from podrt.images.manager import ImageManager

    images = ImageManager(Config(), tmp_path)
    await images.start()
    try:
        importer = _store(tmp_path)
        importer.keep(_layered(importer, 1, "example.local/app:v1"))
        found = await images.find("example.local/app:v1")
        assert found is not None and images.layer_links(found) == ("l/LINK1",)
        await asyncio.sleep(0.05)  # the watch's events of the write above are read
        assert await images.find("example.local/app:v1") == found  # fills what the first look-up began

        trips: list[object] = []
        real = asyncio.to_thread

        async def counted(fn: object, *args: object) -> object:
            trips.append(fn)
            return await real(fn, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(asyncio, "to_thread", counted)
        assert await images.find("example.local/app:v1") == found and await images.find("example.local/none:v1") is None
        assert trips == []
        importer.keep(_layered(importer, 2, "example.local/other:v1"))
        await asyncio.sleep(0.05)
        other = await images.find("example.local/other:v1")
        assert other is not None and images.layer_links(other) == ("l/LINK2",) and len(trips) == 1
    finally:
        await images.close()
