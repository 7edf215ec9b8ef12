"""The builtin pause image: a rootfs holding the host's static catatonit.

A fresh machine needs no registry to run pods. The rootfs is shared read-only
by every infra container (their root is read-only), so no per-pod copy or
overlay is needed; mount points the spec binds over already exist in it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import attrs

BUILTIN_PAUSE_IMAGE = "podrt.local/pause:builtin"
STOP_SIGNAL = "SIGTERM"  # catatonit exits on SIGTERM/SIGINT
_DIRS = ("proc", "sys", "dev", "dev/shm", "dev/pts", "etc", "tmp")
_FILES = ("etc/hostname", "etc/resolv.conf", "etc/hosts")


@attrs.frozen
class PauseImage:
    reference: str
    rootfs: Path
    stop_signal: str = STOP_SIGNAL


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def ensure_builtin(images_dir: Path, catatonit: Path) -> PauseImage:
    """Build (once per catatonit binary) and return the builtin pause rootfs.

    Built in a temp dir and renamed into place, so a crash never leaves a half
    image that later pods would use.
    """
    if not catatonit.is_file():
        raise FileNotFoundError(f"catatonit not found at {catatonit} (apt-get install catatonit)")
    target = images_dir / f"builtin-pause-{_digest(catatonit)}"
    if (target / "rootfs" / "catatonit").is_file():
        return PauseImage(BUILTIN_PAUSE_IMAGE, target / "rootfs")
    images_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=images_dir, prefix=".build-"))
    try:
        rootfs = tmp / "rootfs"
        for d in _DIRS:
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        for f in _FILES:
            (rootfs / f).touch()
        shutil.copy2(catatonit, rootfs / "catatonit")
        os.chmod(rootfs / "catatonit", 0o755)
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "rootfs" / "catatonit").is_file():  # else another start won the race
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PauseImage(BUILTIN_PAUSE_IMAGE, target / "rootfs")
