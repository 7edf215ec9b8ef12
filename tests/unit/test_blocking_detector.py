"""The blocking-call detector (aio/blocking.py) catches each kind of call it
watches when made on the running loop's thread, and only there: the
integration test that asserts it reports nothing can fail."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from podrt.aio.blocking import BlockingDetector


def _detect(tmp_path: Path, blocking: bool) -> list[str]:
    """What the detector reports of one round of blocking calls, on the loop or in a thread."""
    reports: list[str] = []
    detector = BlockingDetector(lambda what, stack: reports.append(what.split("(")[0] + "@" + stack.splitlines()[-2]))
    target = tmp_path / "file"
    target.write_text("x")

    def calls() -> None:
        with open(target, "rb") as f:
            f.read()
            os.fsync(f.fileno())
            fcntl.flock(f, fcntl.LOCK_EX)
        time.sleep(0)
        subprocess.run(["true"], check=True)
        os.listdir(tmp_path)
        with open("/proc/self/stat", "rb") as f:  # allowed: a line the kernel answers from memory
            f.read()

    async def main() -> None:
        with detector.armed_on(asyncio.get_running_loop()):
            if blocking:
                calls()
            else:
                await asyncio.to_thread(calls)

    asyncio.run(main())
    assert detector.count == len(reports)
    return reports


def test_each_blocking_call_on_the_loop_is_reported_with_its_caller(tmp_path: Path) -> None:
    reports = _detect(tmp_path, blocking=True)
    assert [r.split("@")[0] for r in reports] == ["open", "os.fsync", "fcntl.flock", "time.sleep", "subprocess.run",
                                                  "os.listdir"]
    assert all("in calls" in r for r in reports), reports  # the stack names the caller


def test_the_same_calls_in_a_worker_thread_are_not(tmp_path: Path) -> None:
    assert _detect(tmp_path, blocking=False) == []


def test_disarmed_it_wraps_nothing_and_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fsync = os.fsync
    detector = BlockingDetector()

    async def main() -> None:
        with detector.armed_on(asyncio.get_running_loop()):
            assert os.fsync is not fsync
            with open(tmp_path / "f", "w") as f:
                os.fsync(f.fileno())
        (tmp_path / "f").read_text()

    asyncio.run(main())
    assert os.fsync is fsync and detector.count == 1  # the fsync (a new file's open is not), not the read after
    assert [r.levelname for r in caplog.records].count("ERROR") == 1
    assert "blocking call on the event loop: os.fsync" in caplog.text and "in main" in caplog.text
