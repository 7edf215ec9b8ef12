"""A long blob logs its progress; a blob that stops sending fails naming itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podrt import errors
from podrt.images import pull
from podrt.oci.reference import parse

DIGEST = "sha256:" + "ab" * 32


async def _chunks(n: int, pause: float, then_stall: bool = False) -> AsyncIterator[bytes]:
    for _ in range(n):
        await asyncio.sleep(pause)
        yield b"x" * 1000
    if then_stall:
        await asyncio.sleep(3600)


def _puller(progress_timeout: float = 300.0) -> pull.Puller:
    settings = pull.PullSettings(Path("/nonexistent"), (), progress_timeout=progress_timeout)
    return pull.Puller(None, settings, None)  # type: ignore[arg-type]  # _watched needs neither


async def test_a_long_blob_logs_bytes_and_percent(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pull, "PROGRESS_EVERY", 0.05)
    caplog.set_level(logging.INFO, logger="podrt.images.pull")
    got = [c async for c in _puller()._watched(_chunks(10, 0.02), DIGEST, parse("127.0.0.1:1/a:b"), 10000)]
    assert len(got) == 10
    lines = [r.getMessage() for r in caplog.records if "of 0.0 MB" in r.getMessage()]
    assert lines and all(f"blob {DIGEST[7:19]}" in line and "%" in line for line in lines), caplog.text


async def test_a_blob_without_progress_fails_naming_it() -> None:
    watched = _puller(progress_timeout=0.1)._watched(_chunks(2, 0, then_stall=True), DIGEST, parse("127.0.0.1:1/a:b"), 10000)
    with pytest.raises(errors.DeadlineExceeded, match=f"blob {DIGEST}: no progress for 0.1s"):
        async for _ in watched:
            pass
