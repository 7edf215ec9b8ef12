"""Fixtures that run the real daemon on temporary dirs and a temporary socket."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.daemon import DaemonDirs, DaemonProcess


def write_test_conflist(cni_dir: Path, name: str = "podrt-test") -> Path:
    """A network for test namespaces only: own bridge name, unused private subnet."""
    path = cni_dir / "10-podrt-test.conflist"
    path.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "podrttest0",
                        "isGateway": True,
                        "ipMasq": False,
                        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.233.64.0/24"}]]},
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                    {"type": "loopback"},
                ],
            }
        )
    )
    return path


@pytest.fixture
def dirs() -> Iterator[DaemonDirs]:
    base = Path(tempfile.mkdtemp(prefix="podrt-test-"))
    d = DaemonDirs(base)
    d.write_config()
    yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def daemon(dirs: DaemonDirs) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(dirs).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[DaemonProcess]:
    """One daemon for read-mostly tests of a module (saves start-up time)."""
    base = Path(tempfile.mkdtemp(prefix="podrt-test-"))
    d = DaemonDirs(base)
    d.write_config()
    proc = DaemonProcess(d).start()
    yield proc
    proc.kill()
    shutil.rmtree(base, ignore_errors=True)
