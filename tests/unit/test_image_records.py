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
