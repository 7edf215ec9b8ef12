"""The event bus and the exit-dir watch, without a daemon: every subscriber
gets every event in order; a slow one loses its oldest (counted); close ends
the streams; inotify reports names written into a directory, and an overflow."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

from podrt.container.events import EventBus, EventType
from podrt.host.inotify import IN_MOVED_TO, IN_Q_OVERFLOW, DirWatch, parse


async def _drain(items: object, count: int) -> list[object]:
    out = []
    async for item in items:  # type: ignore[attr-defined]
        out.append(item)
        if len(out) == count:
            break
    return out


async def test_every_subscriber_gets_every_event_rendered_once() -> None:
    bus = EventBus(limit=10)
    rendered = []
    bus.render = lambda e: rendered.append(e) or (e.container_id, e.type)
    bus.publish("nobody-listens", "pod", EventType.CREATED)
    with bus.subscribe() as a, bus.subscribe() as b:
        bus.publish("c1", "pod", EventType.CREATED)
        bus.publish("c1", "pod", EventType.STARTED)
        want = [("c1", EventType.CREATED), ("c1", EventType.STARTED)]
        assert await _drain(a.items(), 2) == want
        assert await _drain(b.items(), 2) == want
    assert len(rendered) == 2  # once per event, not per subscriber; none without subscribers
    assert len(bus) == 0


async def test_a_slow_subscriber_loses_the_oldest_and_it_is_counted() -> None:
    dropped = []
    bus = EventBus(limit=3, on_drop=lambda: dropped.append(1))
    with bus.subscribe() as slow:
        for n in range(5):
            bus.publish(f"c{n}", "pod", EventType.CREATED)
        assert [e.container_id for e in await _drain(slow.items(), 3)] == ["c2", "c3", "c4"]
    assert len(dropped) == 2


async def test_close_ends_the_streams_after_what_was_queued() -> None:
    bus = EventBus(limit=10)
    with bus.subscribe() as sub:
        waiting = asyncio.ensure_future(_drain(sub.items(), 99))
        await asyncio.sleep(0)
        bus.publish("c1", "pod", EventType.DELETED)
        bus.close()
        assert [e.container_id for e in await asyncio.wait_for(waiting, 1)] == ["c1"]
    with bus.subscribe() as late:  # after close: ends at once
        assert await asyncio.wait_for(_drain(late.items(), 1), 1) == []


def test_parse_names_and_overflow() -> None:
    def event(mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name)) if name else b""
        return struct.pack("iIII", 1, mask, 0, len(padded)) + padded

    data = event(IN_MOVED_TO, b"abc") + event(IN_Q_OVERFLOW, b"") + event(IN_MOVED_TO, b"def")
    assert parse(data) == ["abc", None, "def"]


async def test_the_watch_sees_renames_and_writes(tmp_path: Path) -> None:
    seen: list[str | None] = []
    arrived = asyncio.Event()
    watch = DirWatch(tmp_path, lambda name: (seen.append(name), arrived.set()))
    watch.start()
    try:
        (tmp_path / ".tmp").write_text("0")
        os.rename(tmp_path / ".tmp", tmp_path / "renamed")  # as conmon (GLib) writes its exit file
        (tmp_path / "written").write_text("1")
        while len(seen) < 3:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 2)
    finally:
        watch.close()
    assert seen == [".tmp", "renamed", "written"]
