"""inotify.wait_for_file: a file written (or renamed in, as conmon's GLib
does) after the wait began ends it at once; one already there ends it before
any wait; another file in the directory does not; nothing by the deadline is False."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import pytest

from podrt.host import inotify
from podrt.host.inotify import wait_for_file


async def test_a_file_renamed_in_later_ends_the_wait(tmp_path: Path) -> None:
    target = tmp_path / "c1"

    async def write_later() -> None:
        await asyncio.sleep(0.05)
        (tmp_path / "other").write_text("0")  # another container's exit: not this one
        await asyncio.sleep(0.05)
        (tmp_path / ".c1.tmp").write_text("137")
        os.rename(tmp_path / ".c1.tmp", target)

    writer = asyncio.ensure_future(write_later())
    started = time.monotonic()
    assert await wait_for_file(target, 5.0)
    assert 0.09 <= time.monotonic() - started < 1.0  # not before the rename, and not at the deadline
    await writer


async def test_a_file_already_there_and_a_deadline(tmp_path: Path) -> None:
    (tmp_path / "c1").write_text("0")
    assert await wait_for_file(tmp_path / "c1", 0.0)
    started = time.monotonic()
    assert not await wait_for_file(tmp_path / "c2", 0.1)
    assert time.monotonic() - started >= 0.1


async def test_without_an_inotify_instance_left_the_wait_still_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """128 instances a user by default: with none left (EMFILE) the wait looks
    for the file instead of failing the stop that waits."""

    def exhausted(_on_readable: object) -> int:
        raise OSError(errno.EMFILE, "inotify_init1: Too many open files")

    monkeypatch.setattr(inotify, "_open", exhausted)
    target = tmp_path / "c1"

    async def write_later() -> None:
        await asyncio.sleep(0.05)
        target.write_text("0")

    writer = asyncio.ensure_future(write_later())
    assert await wait_for_file(target, 5.0)
    await writer
    assert not await wait_for_file(tmp_path / "c2", 0.05)
