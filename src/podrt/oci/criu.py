"""Whether CRIU can checkpoint containers on this host: `criu check`, run once.

runc checkpoints through CRIU (the `criu` it finds in its PATH). Whether CRIU
works is a property of the kernel, not of a container: on some kernels
(Debian's criu 3.17 on Linux 6.18: "vdso: Failed to fill self vdso symtable")
it fails before it looks at any process. So CheckpointContainer asks once,
keeps the answer for the daemon's life, and refuses with CRIU's own words;
`podrt check` reports the same probe.
"""

from __future__ import annotations

import asyncio
import shutil

from podrt.host import proc
from podrt.oci.conmon import CLEAN_PATH

CHECK_TIMEOUT = 30.0
INSTALL_HINT = "apt-get install -y criu"


def criu_path() -> str | None:
    """The criu runc would run: the first in the PATH podrt gives runc."""
    return shutil.which("criu", path=CLEAN_PATH)


def check_message(stdout: str, stderr: str) -> str:
    """CRIU's own account of a failed check: its Error lines (the last ones
    name the cause), else whatever it printed, as one line."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return "; ".join(errors or lines) or "criu check failed without a message"


async def probe() -> str | None:
    """None when `criu check` passes, else why checkpointing cannot work."""
    path = criu_path()
    if path is None:
        return f"criu is not installed (not in {CLEAN_PATH}); {INSTALL_HINT}"
    try:
        code, out, err = await proc.run([path, "check"], timeout=CHECK_TIMEOUT, env={"PATH": CLEAN_PATH})
    except OSError as exc:  # TimeoutError included
        return f"{path} check: {exc}"
    if code == 0:
        return None
    return f"{path} check: {check_message(out.decode(errors='replace'), err.decode(errors='replace'))}"


class CriuSupport:
    """The probe's answer, asked for once (about 20 ms, off the event loop: a child process)."""

    def __init__(self) -> None:
        self._result: tuple[str | None] | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        async with self._lock:
            if self._result is None:
                self._result = (await probe(),)
            return self._result[0]
