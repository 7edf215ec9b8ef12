"""Run the real daemon (`python -m podrt.cli serve`) on temporary dirs and socket."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

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


LOG_PROBLEMS = (b"Traceback (most recent call last)", b"was never retrieved")  # a bug in podrt, whatever the test
_RECORD_START = re.compile(rb"\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # podrt's log line prefix


def _injected(record: bytes) -> bool:
    """A traceback whose exception is a fault plan's InjectedFault: the test's
    own doing (one chained from it, raised while handling it, is not)."""
    lines = [line for line in record.splitlines() if line.strip()]
    return bool(lines) and lines[-1].startswith(b"podrt.faults.InjectedFault")


class DaemonProcess:
    """A `podrt serve` child; waits for its socket; stopped by PID only.

    Each stop or kill reads what the daemon logged since the last one: a
    traceback or an asyncio "never retrieved" is a bug in podrt (bad input
    gets a status and one line), recorded in `problems` for the suite's
    fixture to fail the test (or module) that ran the daemon. Tracebacks of a
    fault plan's InjectedFault are the test's own; a test that makes podrt
    fail unexpectedly otherwise sets `expect_tracebacks`."""

    problems: ClassVar[list[str]] = []
    live: ClassVar[set[DaemonProcess]] = set()  # read after each test too: a module's daemon blames the right test

    def __init__(self, dirs: DaemonDirs, *extra_args: str) -> None:
        self.dirs = dirs
        self.log_path = dirs.base / "daemon.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.expect_tracebacks = False
        self._checked = 0  # log bytes already read for problems

    def start(self, timeout: float = 15.0) -> DaemonProcess:
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
        self._checked = max(self._checked, offset)  # an earlier daemon's lines were its own to check
        DaemonProcess.live.add(self)
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
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()  # a hung daemon must not outlive its test
            raise
        self.check_log()
        DaemonProcess.live.discard(self)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.check_log()
        DaemonProcess.live.discard(self)

    def check_log(self) -> None:
        """Record the log's tracebacks and unretrieved task exceptions since the last check."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._checked)
                new = f.read()
        except FileNotFoundError:
            return
        new = new[:new.rfind(b"\n") + 1]  # whole lines: a running daemon may be mid-record
        self._checked += len(new)
        if self.expect_tracebacks:
            return
        for marker in LOG_PROBLEMS:
            at = new.find(marker)
            while at >= 0:
                end = _RECORD_START.search(new, at)  # the next log record ends this one
                record = new[at:end.start() if end else len(new)]
                if not _injected(record):
                    excerpt = new[max(0, at - 400):at + 2500].decode(errors="replace")
                    DaemonProcess.problems.append(f"{self.log_path}: {marker.decode()}:\n{excerpt}")
                    return
                at = new.find(marker, at + 1)
