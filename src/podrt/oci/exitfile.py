"""conmon's exit file, `<exit-dir>/<container id>`: the exit code as text,
written once when the container's process is gone (-1 when conmon killed it
on timeout); its mtime is when. The one reader of it."""

from __future__ import annotations

from pathlib import Path

import attrs


@attrs.frozen
class ExitFile:
    code: int | None  # None: the file holds no number
    finished_at: int  # its mtime, ns since the epoch
    text: str  # as written, stripped


def read(exit_dir: Path, container_id: str) -> ExitFile | None:
    """None while there is no file (the container has not exited, or was removed).
    Small, and on the runroot's tmpfs: cheap enough to read inline."""
    path = Path(exit_dir) / container_id
    try:
        text = path.read_text().strip()
        finished = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return ExitFile(int(text) if text.lstrip("-").isdigit() else None, finished, text)
