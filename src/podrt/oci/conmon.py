"""conmon: its command line, its launch, its sync pipe, and its daemonized processes.

conmon is the per-container monitor CRI-O uses: it runs ``runc create``, holds
the container's stdio (k8s-file log, attach socket), reaps the container and
writes its exit code to ``<exit-dir>/<id>``. It daemonizes (double fork), so
the process we spawn is only a launcher; the monitor proper is reported in the
conmon pidfile, is no child of ours and cannot be waited for with waitpid:
``wait_pid_exit`` uses a pidfd instead.

The handshake, as in CRI-O:

* ``_OCI_STARTPIPE``: conmon blocks reading it before it forks, so the caller
  can move the launcher into cgroups first and every later fork inherits them;
* ``_OCI_SYNCPIPE``: conmon writes one JSON line, ``{"pid": N}`` once
  ``runc create`` succeeded, or ``{"pid": -1, "message": "<runc stderr>"}``.
  Without ``--api-version`` the key is ``pid``; with it, ``data``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import attrs

from podrt.aio import finish_in_thread
from podrt.host import inotify, procfs
from podrt.host.proc import kill_group

CONMON_PIDFILE = "conmon.pid"
CONTAINER_PIDFILE = "pidfile"
# conmon and runc get this instead of the daemon's environment: a stray
# NOTIFY_SOCKET or LISTEN_PID in it would change what runc and conmon do.
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ConmonError(Exception):
    """conmon could not be launched or said nothing useful; the message is one line."""


@attrs.frozen
class ConmonSpec:
    """Everything conmon's command line is made of, for one container."""

    conmon_path: str
    runtime_path: str
    runtime_root: str
    container_id: str
    bundle: Path
    log_path: Path
    exit_dir: Path
    persist_dir: Path
    socket_dir: Path
    name: str = ""
    runtime_args: tuple[str, ...] = ()
    stdin: bool = False  # keep a stdin pipe that attach clients write to
    leave_stdin_open: bool = False  # not closed when the first attach client leaves (not stdin_once)
    tty: bool = False  # a pty from runc through conmon's console socket

    @property
    def conmon_pidfile(self) -> Path:
        return self.persist_dir / CONMON_PIDFILE

    @property
    def container_pidfile(self) -> Path:
        return self.persist_dir / CONTAINER_PIDFILE


def conmon_argv(spec: ConmonSpec) -> list[str]:
    """conmon's argv, as CRI-O builds it for cgroupfs (no --systemd-cgroup, no --syslog).

    No --full-attach: with it conmon ignores --socket-dir-path and binds the
    attach socket in the bundle, whose path can exceed the 108-byte limit of a
    unix socket address for clients. Without it conmon links
    <socket-dir>/<cuuid> -> bundle and the socket is <socket-dir>/<cuuid>/attach.
    """
    argv = [
        spec.conmon_path,
        "-b", str(spec.bundle),
        "-c", spec.container_id,
        "-u", spec.container_id,
        "-n", spec.name or spec.container_id,
        "-r", spec.runtime_path,
        "--runtime-arg", f"--root={spec.runtime_root}",
    ]
    for arg in spec.runtime_args:
        argv += ["--runtime-arg", arg]
    argv += [
        "-P", str(spec.conmon_pidfile),
        "-p", str(spec.container_pidfile),
        "-l", f"k8s-file:{spec.log_path}",
        "--exit-dir", str(spec.exit_dir),
        "--persist-dir", str(spec.persist_dir),
        "--socket-dir-path", str(spec.socket_dir),
    ]
    if spec.stdin:
        argv.append("--stdin")
        if spec.leave_stdin_open:
            argv.append("--leave-stdin-open")
    if spec.tty:
        argv.append("--terminal")
    return argv


def attach_socket_link(socket_dir: Path, container_id: str) -> Path:
    """The symlink conmon makes in the socket dir; it outlives conmon, so delete removes it."""
    return socket_dir / container_id


@attrs.frozen
class SyncReply:
    """conmon's answer on the sync pipe: pid > 0, or pid < 0 and runc's stderr in message."""

    pid: int
    message: str = ""


def parse_sync_reply(line: bytes) -> SyncReply:
    """Decode conmon's JSON line; both API versions ("pid" / "data" key) are accepted."""
    try:
        doc = json.loads(line)
        value = doc["pid"] if "pid" in doc else doc["data"]
        return SyncReply(int(value), str(doc.get("message", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConmonError(f"conmon sent an unreadable sync message {line[:200]!r}: {exc}") from None


@attrs.define
class ConmonLaunch:
    """The launcher process we spawned and our ends of the pipes."""

    proc: asyncio.subprocess.Process
    sync_fd: int
    output: IO[bytes]

    def output_text(self) -> str:
        """What the launcher printed (option errors end up here; the daemon prints to /dev/null)."""
        try:
            self.output.seek(0)
            return self.output.read(8192).decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        if self.sync_fd >= 0:
            os.close(self.sync_fd)
            self.sync_fd = -1
        self.output.close()


async def launch(spec: ConmonSpec, cgroup_procs: Sequence[Path] = ()) -> ConmonLaunch:
    """Spawn conmon, place the launcher into each cgroup.procs, then let it run.

    The launcher waits on the start pipe, so conmon, runc and the container all
    start in the cgroups written here. On failure the launcher is killed.
    """
    output = await finish_in_thread(_prepare, spec)
    sync_r, sync_w = os.pipe()
    start_r, start_w = os.pipe()
    # LC_ALL: conmon's option parser converts paths from the locale's charset;
    # in the C locale a UTF-8 log path makes it exit before it starts.
    env = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8", "_OCI_SYNCPIPE": str(sync_w), "_OCI_STARTPIPE": str(start_r)}
    try:
        proc = await asyncio.create_subprocess_exec(
            *conmon_argv(spec), stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
            pass_fds=(sync_w, start_r), env=env, start_new_session=True,  # no terminal signals; killable as a group
            cwd=spec.bundle,  # conmon writes some files (its OOM marker) relative to its cwd: never the daemon's
        )
    except BaseException:
        for fd in (sync_r, start_w):
            os.close(fd)
        output.close()
        raise
    finally:
        os.close(sync_w)
        os.close(start_r)
    started = ConmonLaunch(proc, sync_r, output)
    try:
        if cgroup_procs:
            await finish_in_thread(_join_cgroups, proc.pid, cgroup_procs)  # a migration may wait on the kernel's locks
        os.write(start_w, b"0")
    except BaseException as exc:
        await kill_launcher(proc)
        said = started.output_text().replace("\n", " ")
        started.close()
        if isinstance(exc, ConmonError) and said:  # it exited before the start pipe: say why
            raise ConmonError(f"conmon exited before it started: {said}") from None
        raise
    finally:
        os.close(start_w)
    return started


def _prepare(spec: ConmonSpec) -> IO[bytes]:
    """The dirs conmon writes into (an OSError as is: a full disk is
    ResourceExhausted), and the file its launcher's output goes to: one trip
    to a thread, no mkdir on the loop."""
    for d in (spec.exit_dir, spec.persist_dir, spec.socket_dir, spec.log_path.parent):
        d.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile()


def _join_cgroups(pid: int, cgroup_procs: Sequence[Path]) -> None:
    for procs in cgroup_procs:
        try:
            Path(procs).write_text(str(pid))
        except OSError as exc:
            raise ConmonError(f"cannot move conmon into {procs}: {exc.strerror or exc}") from None


async def kill_launcher(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL our own launcher child and its group (if still there) and reap it."""
    if proc.returncode is None:
        kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()


async def wait_launcher(started: ConmonLaunch) -> None:
    """Wait for the launcher to exit (it does so right after the fork and the pidfile write)."""
    code = await started.proc.wait()
    if code != 0:
        text = started.output_text().replace("\n", " ") or "no output"
        raise ConmonError(f"conmon exited with status {code}: {text}")


async def read_sync_reply(started: ConmonLaunch) -> SyncReply | None:
    """The first line conmon writes on the sync pipe, or None on EOF (conmon died silently).

    Read through the event loop; the caller bounds it with a timeout.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(started.sync_fd, "rb", buffering=0)
    started.sync_fd = -1  # the transport owns and closes it now
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        line = await reader.readline()
    finally:
        transport.close()
    return parse_sync_reply(line) if line.strip() else None


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def find_conmon_pids(container_id: str) -> list[int]:
    """conmon processes monitoring this container, found by their command line.

    Used on a failed create, where the pidfile may not have been written yet.
    """
    return [pid for pid in procfs.pids() if monitors(pid, container_id)]


def monitors(pid: int, container_id: str) -> bool:
    """Whether `pid` is a conmon of this container (not a process that took a dead conmon's pid)."""
    if procfs.comm(pid) != "conmon" or (args := procfs.cmdline(pid)) is None:
        return False
    return _has_option(args, b"-c", container_id.encode()) or _has_option(args, b"--cid", container_id.encode())


def is_monitored(container_id: str, pid: int, conmon_pid: int) -> bool:
    """Whether `pid` is this container's live init: a child of its conmon (conmon
    is the init's subreaper and parent, so a pid taken over after the init was
    reaped is another process's child). /proc reads, no exec."""
    if pid <= 0 or conmon_pid <= 0:
        return False
    st = procfs.stat(pid)
    return st is not None and st.ppid == conmon_pid and st.state not in ("Z", "X") and monitors(conmon_pid, container_id)


async def wait_exit_file(exit_file: Path, container_id: str, conmon_pid: int, timeout: float) -> bool:
    """Until conmon's exit file is there (an inotify watch: it comes a few ms
    after the exit); True at once when its conmon is gone (killed with a daemon,
    at a failed create's clean-up: no file comes); False after `timeout`.
    `conmon_pid`: the known conmon (0: looked for with a /proc scan)."""
    if exit_file.exists():
        return True
    if conmon_pid and monitors(conmon_pid, container_id):
        conmon_alive = True
    else:
        conmon_alive = bool(await asyncio.to_thread(find_conmon_pids, container_id))
    return not conmon_alive or await inotify.wait_for_file(exit_file, timeout)


def init_pidfd(container_id: str, pid: int, conmon_pid: int) -> int | None:
    """A pidfd of the container's init, opened before the pid is checked
    (is_monitored): a signal sent or an exit waited for through it then concerns
    that process only, never one that took the pid over; None when it does not
    check out. /proc reads: off the loop. The caller closes it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if is_monitored(container_id, pid, conmon_pid):
        return fd
    os.close(fd)
    return None


def _has_option(args: list[bytes], flag: bytes, value: bytes) -> bool:
    return any(a == flag and b == value for a, b in zip(args, args[1:])) or flag + b"=" + value in args


async def wait_pid_exit(pid: int, timeout: float, pidfd: int | None = None) -> bool:
    """Wait until a process that is not our child exits; False on timeout.

    A pidfd turns readable when the process exits (zombie included), so no
    polling; kernels without pidfd_open fall back to polling /proc. `pidfd`:
    the process's, opened already (init_pidfd; the caller's to close).
    """
    try:
        fd = os.pidfd_open(pid) if pidfd is None else pidfd
    except ProcessLookupError:
        return True
    except OSError:
        return await _poll_pid_exit(pid, timeout)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            await exited
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        if pidfd is None:
            os.close(fd)


async def _poll_pid_exit(pid: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while procfs.pid_running(pid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def kill_and_wait(pid: int, timeout: float = 5.0) -> bool:
    """SIGKILL a daemonized process (conmon) and wait for it; its runc child dies with it (PDEATHSIG)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return await wait_pid_exit(pid, timeout)
