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

from podrt.aio.blocking import LONG_CALLBACK_CPU, BlockingDetector


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


def test_a_callback_long_on_the_loops_cpu_is_reported_with_its_task_and_a_short_one_is_not() -> None:
    reports: list[tuple[str, str]] = []
    detector = BlockingDetector(lambda what, stack: reports.append((what, stack)))

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    async def busy(seconds: float) -> None:
        spin(seconds)  # one step of this task
        await asyncio.sleep(0)

    async def main() -> None:
        with detector.armed_on(asyncio.get_running_loop()):
            await asyncio.create_task(busy(LONG_CALLBACK_CPU * 2), name="the-busy-one")
            await asyncio.create_task(busy(LONG_CALLBACK_CPU / 4), name="a-quick-one")
            asyncio.get_running_loop().call_soon(spin, LONG_CALLBACK_CPU * 2)
            await asyncio.sleep(0.01)
            await asyncio.to_thread(spin, LONG_CALLBACK_CPU * 2)  # not the loop's thread

    asyncio.run(main())
    assert [what.split(":", 1)[1].split("(")[0].strip().split(".<locals>.")[-1] for what, _ in reports] == [
        "a step of task 'the-busy-one'", "spin"], reports
    assert "in busy" in reports[0][1]  # where the task waits now
