"""Run the real daemon (`python -m podrt.cli serve`) on temporary dirs and socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from tests.support.slow import FACTOR


@attrs.define
class DaemonDirs:
    base: Path
    socket: Path = attrs.field(default=attrs.Factory(lambda self: self.base / "run" / "podrt.sock", takes_self=True))

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def runroot(self) -> Path:
        return self.base / "run"

    @property
    def cni_dir(self) -> Path:
        return self.base / "cni"

    @property
    def config_file(self) -> Path:
        return self.base / "podrt.toml"

    def write_config(self, extra: dict[str, Any] | None = None) -> Path:
        """A config that keeps every path of the daemon inside base."""
        podrt: dict[str, Any] = {
            "root": str(self.root),
            "runroot": str(self.runroot),
            "log_dir": str(self.base / "logs"),
            "log_level": "debug",
            "api": {"listen": str(self.socket)},
            "network": {"network_dir": str(self.cni_dir), "netns_dir": str(self.runroot / "netns")},
            "runtime": {"runtimes": {"runc": {"runtime_path": "/usr/sbin/runc", "runtime_root": str(self.runroot / "runc")}}},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict):
                podrt.setdefault(key, {}).update(value)
            else:
                podrt[key] = value
        self.socket = Path(podrt["api"]["listen"])
        self.cni_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(tomli_w.dumps({"podrt": podrt}))
        return self.config_file


def podrt_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "podrt.cli", *args]


class DaemonProcess:
    """A `podrt serve` child; waits for its socket; stopped by PID only."""

    def __init__(self, dirs: DaemonDirs, *extra_args: str) -> None:
        self.dirs = dirs
        self.log_path = dirs.base / "daemon.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> "DaemonProcess":
        timeout *= FACTOR
        log = open(self.log_path, "ab")
        offset = log.tell()  # a restart appends: only its own lines count
        self.proc = subprocess.Popen(
            podrt_command("serve", "--config", str(self.dirs.config_file), *self.extra_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podrt exited with {self.proc.returncode}:\n{self.log()}")
            if self.dirs.socket.exists() and b"podrt serving on" in self.log_path.read_bytes()[offset:]:
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"podrt did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        timeout *= FACTOR
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()  # a hung daemon must not outlive its test
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
