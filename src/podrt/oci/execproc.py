"""A `runc exec` whose stdio the streaming server relays (Exec RPC), as
opposed to ExecSync's collected output (OciRuntime.exec_sync).

Without a TTY the process gets pipes: stdin (only when the client sends
some), stdout and stderr. With a TTY, runc is given a pty we own as its
stdio: runc (not detached) makes the container's pty, copies between the two
and applies our pty's size to the container's whenever it gets SIGWINCH, so
a resize is TIOCSWINSZ on ours then SIGWINCH to runc. runc's exit status is
the process's (128+n for a signal); runc's own failure (no such executable)
is read from its log file, not mixed into the process's stderr.

Reads are bounded (64 KiB per read; the pipes hold the rest in the kernel),
so a slow client slows the process instead of growing the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from podrt.host import proc as procmod
from podrt.oci.runclog import runc_error_text

CHUNK = 64 * 1024
PIPE_GRACE = 1.0  # after runc's exit, for output still in flight; a background process may hold the pipes
PIPE_LIMIT_AFTER_EXIT = 10.0  # and at most this long, however slowly a client reads what a background process writes
DEFAULT_SIZE = (80, 24)
PID_FILE_WAIT = 2.0  # for runc exec to write the pid file of a process it started
KillTree = Callable[[Path], None]  # kills what runc exec started, by its pid file (oci/runtime.kill_exec)
MAX_SIZE = 65535  # a winsize field


@attrs.frozen
class ExecExit:
    code: int
    error: str = ""  # runc's own failure (the process never ran), else ""


class ExecProcess:
    """One running exec. Call close() in every case: it kills what still runs and removes the files."""

    def __init__(self, child: asyncio.subprocess.Process, watch: procmod._ExitWatch, *, master: int | None,
                 files: Sequence[Path], pid_file: Path, log_file: Path, kill_tree: KillTree) -> None:
        self._child, self._watch = child, watch
        self._master = master
        self._files, self._pid_file, self._log_file = files, pid_file, log_file
        self._kill_tree = kill_tree
        self._loop = asyncio.get_running_loop()
        self._eof_task = None if master is not None else asyncio.ensure_future(self._eof_after_exit())

    @property
    def tty(self) -> bool:
        return self._master is not None

    # ---- output ----------------------------------------------------------------------

    async def read_stdout(self) -> bytes:
        """The next output (all of it, with a TTY); b"" at the end."""
        if self._master is not None:
            return await self._read_pty()
        assert self._child.stdout is not None
        return await _read_joined(self._child.stdout)

    async def read_stderr(self) -> bytes:
        if self._child.stderr is None:
            return b""
        return await _read_joined(self._child.stderr)

    async def _read_pty(self) -> bytes:
        assert self._master is not None
        while True:
            try:
                return os.read(self._master, CHUNK)
            except BlockingIOError:
                await self._ready(self._loop.add_reader, self._loop.remove_reader)
            except OSError as exc:
                if exc.errno == errno.EIO:  # every slave end closed: runc is gone
                    return b""
                raise

    async def _ready(self, add: Callable[[int, Callable[[], None]], object], remove: Callable[[int], object]) -> None:
        assert self._master is not None
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add(self._master, wake)
        try:
            await ready
        finally:
            remove(self._master)

    async def _eof_after_exit(self) -> None:
        """Once runc exited, its output is read to the end; but a process it
        left in the background may hold the pipes open, so they are closed
        after PIPE_GRACE without anything new. The grace starts over while
        output still waits for a slow client: none of it is lost."""
        await self._watch.exited
        readers = {fd: r for fd, r in ((1, self._child.stdout), (2, self._child.stderr)) if r is not None}
        exited_at = quiet_since = self._loop.time()
        while True:
            open_ = {fd: r for fd, r in readers.items() if not r.at_eof()}
            if not open_:
                return
            now = self._loop.time()
            if now - exited_at >= PIPE_LIMIT_AFTER_EXIT:  # a background writer cannot keep the session forever
                break
            if any(len(r._buffer) for r in open_.values()):  # type: ignore[attr-defined]  # still being sent
                quiet_since = now
            elif now - quiet_since >= PIPE_GRACE:
                break
            await asyncio.sleep(0.05)
        transport = self._child._transport  # type: ignore[attr-defined]
        for fd in open_:
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None:
                pipe.close()  # its reader then sees EOF after what it holds

    # ---- input -----------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Waits while the process does not read (back-pressure); data after the exit is dropped."""
        if self._master is not None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._master, view):]
                except BlockingIOError:
                    await self._ready(self._loop.add_writer, self._loop.remove_writer)
                except OSError:
                    return
            return
        if self._child.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._child.stdin.write(data)
            await self._child.stdin.drain()

    def close_stdin(self) -> None:
        """The client's stdin ended. A TTY has no end of input but ^D, which is the client's to send."""
        if self._child.stdin is not None:
            self._child.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self._master is None or not (0 < width <= MAX_SIZE and 0 < height <= MAX_SIZE):
            return
        set_size(self._master, width, height)
        with contextlib.suppress(ProcessLookupError):
            if self._child.returncode is None:
                os.kill(self._child.pid, signal.SIGWINCH)

    # ---- the end ---------------------------------------------------------------------

    async def wait(self) -> ExecExit:
        await self._watch.exited
        code = self._child.returncode
        assert code is not None
        error = ""
        if code == 255:  # runc's own failure code: its log says whether it failed, or the process exited 255
            with contextlib.suppress(OSError):
                error = runc_error_text(await asyncio.to_thread(self._log_file.read_bytes))
        return ExecExit(code if code >= 0 else 128 - code, error)

    @property
    def running(self) -> bool:
        return not self._watch.exited.done()

    async def _pid_file_written(self) -> None:
        """runc writes the pid file only after the process runs (and its runc init made
        it a session of its own, out of runc's group): killed before that, runc would
        leave the process running with no pid file to find it by. So wait for the file,
        as long as runc runs, for at most PID_FILE_WAIT."""
        deadline = self._loop.time() + PID_FILE_WAIT
        while self.running and not self._pid_file.exists() and self._loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Kill the exec'd process and what it started (a vanished client
        leaves nothing), then runc; remove the spec, pid and log files."""
        if self.running:
            await self._pid_file_written()
            await asyncio.to_thread(self._kill_tree, self._pid_file)
            procmod.kill_group(self._child.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._watch.exited), 10)
        await asyncio.to_thread(self._kill_tree, self._pid_file)  # written late by a slow runc
        if self._eof_task is not None:
            self._eof_task.cancel()
        if self._master is not None:
            os.close(self._master)
            self._master = None
        transport = self._child._transport  # type: ignore[attr-defined]
        transport.close()
        for path in self._files:
            path.unlink(missing_ok=True)


async def _read_joined(reader: asyncio.StreamReader) -> bytes:
    """The next output, joined with what the process writes during one more
    loop turn. A process writing 4 KiB at a time (busybox head, cat) would
    otherwise cost one frame, write and drain per 4 KiB: a third of the
    throughput of big writes."""
    chunk = await reader.read(CHUNK)
    if 0 < len(chunk) < CHUNK:
        await asyncio.sleep(0)
        if len(reader._buffer):  # type: ignore[attr-defined]  # read() would wait when it is empty
            chunk += await reader.read(CHUNK - len(chunk))
    return chunk


def set_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def start(argv: list[str], *, stdin: bool, stderr: bool, tty: bool, files: Sequence[Path],
                pid_file: Path, log_file: Path, env: dict[str, str], kill_tree: KillTree) -> ExecProcess:
    """Spawn `runc exec` (argv) with pipes or our pty."""
    if not tty:
        child, watch = await procmod.spawn(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr else subprocess.DEVNULL, env=env)
        return ExecProcess(child, watch, master=None, files=files, pid_file=pid_file, log_file=log_file,
                           kill_tree=kill_tree)
    master, slave = os.openpty()
    try:
        os.set_blocking(master, False)
        set_size(slave, *DEFAULT_SIZE)
        child, watch = await procmod.spawn(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return ExecProcess(child, watch, master=master, files=files, pid_file=pid_file, log_file=log_file,
                       kill_tree=kill_tree)
