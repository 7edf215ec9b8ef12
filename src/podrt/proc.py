"""Running our own helper programs (runc, CNI plugins, unshare) from the event loop."""

from __future__ import annotations

import asyncio
from typing import Mapping, Sequence


async def run(argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
              env: Mapping[str, str] | None = None, cwd: str | None = None) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a child; on timeout or cancellation the child
    (ours, by its PID) is killed and reaped before TimeoutError/CancelledError propagates."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None, cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode or 0, out, err
