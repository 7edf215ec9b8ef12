"""The suite's rule that a test daemon's log has no traceback (tests/support/daemon.py):
what it reports, what it excuses, and that each line is judged once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import DaemonDirs, DaemonProcess

HEAD = "2026-01-01 00:00:00,000 ERROR podrt.x: failed\nTraceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
INJECTED = HEAD + "podrt.faults.InjectedFault: injected fault after ctr-state\n"
CHAINED = (INJECTED + "\nDuring handling of the above exception, another exception occurred:\n\n"
           "Traceback (most recent call last):\n  File \"x.py\", line 2, in g\nKeyError: 'a bug in rollback'\n")
NEVER = "2026-01-01 00:00:01,000 ERROR asyncio: Task exception was never retrieved\n"
NEXT = "2026-01-01 00:00:02,000 INFO podrt.x: next\n"


@pytest.fixture
def problems(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    found: list[str] = []
    monkeypatch.setattr(DaemonProcess, "problems", found)  # the suite's own list stays untouched
    return found


def _daemon(tmp_path: Path, text: str) -> DaemonProcess:
    d = DaemonProcess(DaemonDirs(tmp_path))
    d.log_path.write_text(text)
    return d


@pytest.mark.parametrize("text, reported", [(INJECTED + NEXT, False), (CHAINED + NEXT, True), (NEVER, True),
                                            (HEAD + "ValueError: x\n" + NEXT, True), (NEXT, False)])
def test_what_a_log_check_reports(tmp_path: Path, problems: list[str], text: str, reported: bool) -> None:
    _daemon(tmp_path, text).check_log()
    assert bool(problems) == reported, problems


def test_each_line_is_judged_once_and_only_whole_lines(tmp_path: Path, problems: list[str]) -> None:
    d = _daemon(tmp_path, NEXT + "Traceback (most recent")  # a record being written
    d.check_log()
    assert problems == []
    with open(d.log_path, "a") as f:
        f.write(" call last):\nValueError: x\n")
    d.check_log()
    d.check_log()
    assert len(problems) == 1
