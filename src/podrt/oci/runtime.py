"""The OCI runtime client: runc driven through conmon, the way CRI-O does it.

``create`` hands ``runc create`` to conmon, which stays as the container's
monitor (stdio, log, exit file); every other operation is a short ``runc``
call. Every runc call goes through ``OciRuntime._runc``: asyncio subprocess,
time budget, child killed on timeout, stderr kept for the error message.

runc runs with ``--log-format json`` so its error lines (relayed by conmon on a
failed create, or read from its stderr) decode reliably into one-line
``OciRuntimeError`` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal as signal_mod
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from podrt.aio import await_shielded, finish_in_thread
from podrt.host import cgroups, proc, procfs
from podrt.oci import conmon, execproc, exitfile, signals
from podrt.oci.conmon import ConmonError, ConmonLaunch, ConmonSpec
from podrt.oci.runclog import runc_error_text

RUNC_TIMEOUT = 30.0
KILLS_INIT = ("runc", "crun")  # runtimes whose `kill` (no --all) is a kill(2) of the container's init
KILL_WAIT = 10.0       # how long a SIGKILLed container may take to be reaped
EXIT_FILE_WAIT = 5.0   # conmon writes the exit file after draining and syncing the log
EXEC_GRACE = 5.0       # after an exec's timeout and its kill, for runc exec to notice and return

_NOT_FOUND = ("does not exist",)
_ALREADY_STOPPED = ("not running", "process already finished", "no such process", "container not running")


class OciRuntimeError(Exception):
    """runc or conmon failed; the message is one line with their own error text."""


class RuntimeRefused(OciRuntimeError):
    """runc ran and refused the container with its own message (an executable
    the image lacks, a mount it cannot make, a value the kernel refuses): the
    request does not fit the image or host. Not a failure of podrt's."""


class ExecTimeout(Exception):
    """An exec'd command ran past its timeout (and was killed with its children)."""


def kill_exec(pid_file: Path, container_id: str) -> None:
    """The exec'd process and what it started, if runc wrote its pid and that
    pid is still a process of this container (not a reused one)."""
    pid = conmon.read_pidfile(pid_file)
    if pid and container_id in (procfs.cgroup(pid) or ""):  # None: gone already
        kill_tree(pid)


def kill_tree(pid: int | None) -> None:
    """SIGKILL `pid` and its descendants (found by parent pid in /proc),
    children first; gone ones are skipped."""
    if not pid:
        return
    children: dict[int, list[int]] = {}
    for child, st in procfs.scan():
        children.setdefault(st.ppid, []).append(child)
    order, todo = [], [pid]
    while todo:
        current = todo.pop()
        order.append(current)
        todo.extend(children.get(current, ()))
    for victim in reversed(order):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal_mod.SIGKILL)


@attrs.frozen
class Stdio:
    """How conmon holds a container's stdio (CRI's ContainerConfig stdin, stdin_once, tty)."""

    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False


@attrs.frozen
class ContainerProcess:
    """The container's init pid and the pid of the conmon monitoring it."""

    pid: int
    conmon_pid: int


@attrs.frozen
class RuncResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def error(self) -> str:
        return runc_error_text(self.stderr) or f"exit status {self.returncode}"


def _any_in(text: str, needles: Sequence[str]) -> bool:
    return any(n in text for n in needles)


async def remove_cgroup(path: str, wait: float = KILL_WAIT) -> None:
    """The container's own cgroup, with whatever runc left in it; EBUSY (an
    undo failure, retried from the journal) only if a killed process outlives `wait`."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return await finish_in_thread(cgroups.remove, path)  # usually gone already (runc delete) or empty
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        await finish_in_thread(cgroups.kill_procs, path)
        await asyncio.sleep(0.02)


def _remove_files(link: Path | None, files: Sequence[Path]) -> None:
    """`link` if it is a symlink still, and `files` (gone already: fine)."""
    if link is not None and link.is_symlink():
        link.unlink(missing_ok=True)
    for path in files:
        path.unlink(missing_ok=True)


def _bundle_cgroup(bundle: Path) -> str:
    """linux.cgroupsPath of the bundle's spec ("" when it cannot be read)."""
    try:
        spec = json.loads((bundle / "config.json").read_bytes())
        return str(spec["linux"]["cgroupsPath"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


class OciRuntime:
    """One runtime handler (runc binary + its --root) plus the conmon that monitors containers."""

    def __init__(self, runtime_path: str, runtime_root: str, conmon_path: str, *,
                 handler_name: str = "runc", log: logging.Logger | None = None) -> None:
        self.runtime_path = runtime_path
        self._kills_init = Path(runtime_path).name in KILLS_INIT
        self.runtime_root = runtime_root
        self.conmon_path = conmon_path
        self.handler_name = handler_name
        self.log = log or logging.getLogger("podrt.oci")

    # ------------------------------------------------------------------ runc

    async def _runc(self, *args: str, timeout: float = RUNC_TIMEOUT) -> RuncResult:
        """Run one runc command; on timeout or cancellation the runc child is killed."""
        argv = [self.runtime_path, "--root", self.runtime_root, "--log-format", "json", *args]
        try:
            code, out, err = await proc.run(argv, timeout=timeout, env={"PATH": conmon.CLEAN_PATH})
        except TimeoutError:
            raise OciRuntimeError(f"{self.handler_name} {' '.join(args)}: timed out after {timeout:g}s") from None
        return RuncResult(code, out, err)

    async def _runc_checked(self, *args: str, tolerate: Sequence[str] = ()) -> RuncResult | None:
        """runc that raises OciRuntimeError on failure, or returns None for a tolerated error."""
        result = await self._runc(*args)
        if result.returncode == 0:
            return result
        if _any_in(result.error, tolerate):
            self.log.debug("%s %s: %s (ignored)", self.handler_name, " ".join(args), result.error)
            return None
        raise OciRuntimeError(f"{self.handler_name} {args[0]} {args[-1]}: {result.error}")

    # ---------------------------------------------------------------- create

    async def create(self, container_id: str, bundle: Path, *, log_path: Path, exit_dir: Path,
                     persist_dir: Path, socket_dir: Path, conmon_cgroup_procs: Sequence[Path] = (),
                     stdio: Stdio = Stdio(), timeout: float = 60.0) -> ContainerProcess:
        """Create the container under a new conmon; all or nothing.

        On any failure (runc error, conmon error, timeout, cancellation) conmon
        is killed, ``runc delete --force`` runs and the attach symlink is
        removed before the error propagates. Files in persist_dir stay for the
        caller, who owns that dir.
        """
        spec = ConmonSpec(
            conmon_path=self.conmon_path, runtime_path=self.runtime_path,
            runtime_root=self.runtime_root, container_id=container_id, bundle=Path(bundle),
            log_path=Path(log_path), exit_dir=Path(exit_dir), persist_dir=Path(persist_dir),
            socket_dir=Path(socket_dir), runtime_args=("--log-format=json",),
            stdin=stdio.stdin, leave_stdin_open=stdio.stdin and not stdio.stdin_once, tty=stdio.tty,
        )
        started: ConmonLaunch | None = None
        try:
            async with asyncio.timeout(timeout):
                started = await conmon.launch(spec, conmon_cgroup_procs)
                return await self._finish_create(spec, started)
        except BaseException as exc:
            # waited out however often we are cancelled: the caller's own undo (the
            # bundle's removal) must not run while this clean-up still needs it
            undone = asyncio.ensure_future(self._undo_create(spec, started))
            if await await_shielded(undone) and not isinstance(exc, asyncio.CancelledError):
                raise asyncio.CancelledError(f"cancelled while cleaning up the create of {container_id}") from exc
            if isinstance(exc, TimeoutError):
                raise OciRuntimeError(f"create container {container_id}: timed out after {timeout:g}s") from None
            if isinstance(exc, ConmonError):
                raise OciRuntimeError(f"create container {container_id}: {exc}") from None
            raise
        finally:
            if started is not None:
                started.close()

    async def _finish_create(self, spec: ConmonSpec, started: ConmonLaunch) -> ContainerProcess:
        """Wait for conmon's launcher, then for its report on the sync pipe."""
        await conmon.wait_launcher(started)
        reply = await conmon.read_sync_reply(started)
        if reply is None:
            raise OciRuntimeError(f"create container {spec.container_id}: conmon exited without "
                                  f"reporting a pid (see {spec.log_path})")
        if reply.pid <= 0:
            if text := runc_error_text(reply.message):
                raise RuntimeRefused(f"create container {spec.container_id}: {text}")
            raise OciRuntimeError(f"create container {spec.container_id}: runtime failed with {reply.pid}")
        conmon_pid = await asyncio.to_thread(conmon.read_pidfile, spec.conmon_pidfile)
        if conmon_pid is None:
            raise OciRuntimeError(f"create container {spec.container_id}: conmon wrote no pidfile "
                                  f"{spec.conmon_pidfile}")
        return ContainerProcess(pid=reply.pid, conmon_pid=conmon_pid)

    async def _undo_create(self, spec: ConmonSpec, started: ConmonLaunch | None) -> None:
        """Leave nothing of a failed create: launcher, conmon (and its runc), runc state, symlink, cgroup."""
        if started is not None:
            await conmon.kill_launcher(started.proc)
        pids = set(await asyncio.to_thread(conmon.find_conmon_pids, spec.container_id))  # a /proc scan
        pidfile_pid = await asyncio.to_thread(conmon.read_pidfile, spec.conmon_pidfile)
        if pidfile_pid is not None and procfs.pid_running(pidfile_pid):
            pids.add(pidfile_pid)
        for pid in pids:
            if not await conmon.kill_and_wait(pid):
                self.log.warning("conmon %d of container %s did not exit after SIGKILL", pid, spec.container_id)
        try:
            await self.delete(spec.container_id, socket_dir=spec.socket_dir)
        except OciRuntimeError as exc:
            self.log.warning("cleanup of failed create: %s", exc)
        if cgroup := await asyncio.to_thread(_bundle_cgroup, spec.bundle):  # runc cut down mid-create has no state for delete to go by
            try:
                await remove_cgroup(cgroup)
            except OSError as exc:
                self.log.warning("cleanup of failed create %s: cgroup %s: %s", spec.container_id, cgroup, exc)

    # ------------------------------------------------------- other commands

    async def start(self, container_id: str) -> None:
        """runc start: run the process of a created container."""
        result = await self._runc("start", container_id)
        if result.returncode != 0:
            raise RuntimeRefused(f"{self.handler_name} start {container_id}: {result.error}")

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """runc state as a dict; None when runc does not know the id."""
        result = await self._runc_checked("state", container_id, tolerate=_NOT_FOUND)
        if result is None:
            return None
        try:
            return json.loads(result.stdout)
        except ValueError as exc:
            raise OciRuntimeError(f"{self.handler_name} state {container_id}: unreadable output: {exc}") from None

    async def kill(self, container_id: str, signal: int | str, *, all_processes: bool = False) -> None:
        """runc kill; a stopped or unknown container is not an error (the goal is reached)."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(_signal_arg(signal))]
        result = await self._runc(*args)
        if result.returncode == 0 or _any_in(result.error, _NOT_FOUND + _ALREADY_STOPPED):
            return
        raise OciRuntimeError(f"{self.handler_name} kill {container_id}: {result.error}")

    async def stop(self, container_id: str, *, timeout: float, stop_signal: str = "SIGTERM",
                   exit_dir: Path | None = None, pids: tuple[int, int] | None = None, own_pidns: bool = False) -> None:
        """Stop signal, up to `timeout` seconds of grace, then SIGKILL; idempotent.
        Waits for the init through a pidfd (no polling); with `exit_dir`, briefly for
        conmon's exit file too, so the exit code is readable on return. `pids`: (init,
        conmon) as recorded at create; while they check out (the init is conmon's
        child, conmon this container's), one pidfd of the init spares a `runc state`,
        and with `own_pidns` (the init alone in its PID namespace: a signal to it is
        all runc's and crun's kill do) a `runc kill` too, the signal sent through it."""
        pidfd = await asyncio.to_thread(conmon.init_pidfd, container_id, *pids) if pids is not None else None
        try:
            pid = pids[0] if pids is not None and pidfd is not None else await self._running_pid(container_id)
            if pid is None:
                return
            conmon_pid, direct = pids[1] if pids else 0, pidfd if own_pidns and self._kills_init else None
            if timeout > 0:
                await self._signal(container_id, stop_signal, direct)
                if await conmon.wait_pid_exit(pid, timeout, pidfd):
                    return await self._after_exit(container_id, exit_dir, conmon_pid)
                self.log.info("container %s ignored %s for %gs, killing", container_id, stop_signal, timeout)
            await self._signal(container_id, signal_mod.SIGKILL, direct)
            if not await conmon.wait_pid_exit(pid, KILL_WAIT, pidfd):
                raise OciRuntimeError(f"stop container {container_id}: process {pid} still alive {KILL_WAIT:g}s after SIGKILL")
            await self._after_exit(container_id, exit_dir, conmon_pid)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    async def _signal(self, container_id: str, sig: int | str, pidfd: int | None) -> None:
        """`pidfd`: the checked init's (conmon.init_pidfd), signalled directly; else runc kill."""
        number = sig if isinstance(sig, int) else signals.number(sig)
        if pidfd is not None and number is not None:
            with contextlib.suppress(ProcessLookupError):  # exited since the check: the signal's end is reached
                signal_mod.pidfd_send_signal(pidfd, number)
            return
        await self.kill(container_id, sig)

    async def _running_pid(self, container_id: str) -> int | None:
        """The init pid of a created/running/paused container, per `runc state`; None when there is nothing to stop."""
        st = await self.state(container_id)
        if st is None or st.get("status") == "stopped":
            return None
        pid = int(st.get("pid") or 0)
        return pid if pid > 0 and procfs.pid_running(pid) else None

    async def _after_exit(self, container_id: str, exit_dir: Path | None, conmon_pid: int = 0) -> None:
        """Until conmon's exit file is there, or its conmon is gone without one."""
        if exit_dir is None:
            return
        exit_file = Path(exit_dir) / container_id
        if not await conmon.wait_exit_file(exit_file, container_id, conmon_pid, EXIT_FILE_WAIT):
            self.log.warning("container %s exited but conmon wrote no %s", container_id, exit_file)

    async def delete(self, container_id: str, *, socket_dir: Path | None = None, files: Sequence[Path] = ()) -> None:
        """runc delete --force (kills a live container); no error when runc does not know it.

        With `socket_dir`, also removes the attach symlink conmon left there;
        `files`: more to remove (its exit file), in the same trip to a thread.
        """
        await self._runc_checked("delete", "--force", container_id, tolerate=_NOT_FOUND)
        link = conmon.attach_socket_link(Path(socket_dir), container_id) if socket_dir is not None else None
        if link is not None or files:
            await finish_in_thread(_remove_files, link, files)

    async def pause(self, container_id: str, *, resume: bool = False) -> None:
        """runc pause (the cgroup freezer), or resume; resuming one that is not
        paused (a killed `runc checkpoint` thaws it on its way out) is done already."""
        await self._runc_checked("resume" if resume else "pause", container_id,
                                 tolerate=("container not paused",) if resume else ())

    async def checkpoint(self, container_id: str, *, image_path: Path, work_path: Path, timeout: float) -> None:
        """runc checkpoint --leave-running (as CRI-O runs it): CRIU dumps the
        processes into image_path, its dump.log into work_path; they run on."""
        result = await self._runc("checkpoint", "--leave-running", "--file-locks", "--image-path", str(image_path),
                                  "--work-path", str(work_path), container_id, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeRefused(f"{self.handler_name} checkpoint {container_id}: {result.error}")

    async def update(self, container_id: str, resources: dict[str, Any], *, work_dir: Path) -> None:
        """`runc update --resources`: new cgroup limits for a live container."""
        fd, path = tempfile.mkstemp(dir=work_dir, prefix="update-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(resources, f)
        try:
            result = await self._runc("update", "--resources", path, container_id)
        finally:
            os.unlink(path)
        if result.returncode != 0:  # a value the kernel refuses, or a container that exited meanwhile
            raise RuntimeRefused(f"{self.handler_name} update {container_id}: {result.error}")

    def _exec_command(self, container_id: str, process: dict[str, Any], work_dir: Path, *,
                      log_to_file: bool = False) -> tuple[list[str], Path, Path, Path | None]:
        """`runc exec`'s argv for `process`, written to a spec file in work_dir:
        (argv, spec file, pid file, runc's log file or None for stderr). The caller removes the files."""
        fd, name = tempfile.mkstemp(dir=work_dir, prefix="exec-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(process, f)
        spec_path = Path(name)
        pid_file = Path(name + ".pid")
        log_file = Path(name + ".log") if log_to_file else None
        logging_args = ["--log", str(log_file)] if log_file else []
        argv = [self.runtime_path, "--root", self.runtime_root, *logging_args, "--log-format", "json",
                "exec", "--process", str(spec_path), "--pid-file", str(pid_file), container_id]
        return argv, spec_path, pid_file, log_file

    async def exec_sync(self, container_id: str, process: dict[str, Any], *, timeout: float, max_output: int,
                        work_dir: Path) -> RuncResult:
        """`runc exec` of `process` (an OCI process object) in a running
        container, its output bounded. On timeout or cancellation the exec'd
        process and everything it started are killed (ExecTimeout), so probe
        processes never pile up."""
        argv, spec_path, pid_file, _ = await finish_in_thread(self._exec_command, container_id, process, work_dir)
        run = asyncio.ensure_future(proc.run(argv, timeout=timeout + EXEC_GRACE, env={"PATH": conmon.CLEAN_PATH},
                                             max_output=max_output))
        try:
            done, _ = await asyncio.wait({run}, timeout=timeout)
            if not done:  # the tree first, while its parent links still say what it started
                await asyncio.to_thread(kill_exec, pid_file, container_id)
                with contextlib.suppress(Exception):
                    await run
                # runc may have written the pid file only after the first look
                # (a slow exec under load): its process would outlive runc
                await asyncio.to_thread(kill_exec, pid_file, container_id)
                raise ExecTimeout(f"{timeout:g}s")
            code, out, err = run.result()
        except asyncio.CancelledError:
            kill_exec(pid_file, container_id)
            run.cancel()
            await asyncio.wait({run})
            raise
        finally:  # off the loop; waited for however often we are cancelled meanwhile
            await finish_in_thread(_remove_files, None, (spec_path, pid_file))
        return RuncResult(code, out, err)

    async def start_exec(self, container_id: str, process: dict[str, Any], *, stdin: bool, stderr: bool,
                         work_dir: Path) -> execproc.ExecProcess:
        """`runc exec` of `process` with its stdio relayed by the caller (the
        Exec RPC's stream); a TTY when process["terminal"]. The caller must close() it."""
        argv, spec_path, pid_file, log_file = self._exec_command(container_id, process, work_dir, log_to_file=True)
        assert log_file is not None
        files = (spec_path, pid_file, log_file)
        try:
            return await execproc.start(argv, stdin=stdin, stderr=stderr, tty=bool(process.get("terminal")),
                                        files=files, pid_file=pid_file, log_file=log_file,
                                        env={"PATH": conmon.CLEAN_PATH},
                                        kill_tree=lambda pid_file: kill_exec(pid_file, container_id))
        except BaseException:
            for path in files:
                path.unlink(missing_ok=True)
            raise

    def exit_code(self, exit_dir: Path, container_id: str) -> int | None:
        """The exit code conmon wrote (-1 when it killed on timeout); None before the exit."""
        found = exitfile.read(exit_dir, container_id)
        if found is not None and found.code is None:
            self.log.warning("exit file of %s holds %r, not a number", container_id, found.text[:50])
        return found.code if found is not None else None


def _signal_arg(sig: int | str) -> int | str:
    """A number: runc knows the names of signals 1 to 31 only (not "SIGRTMIN+3").
    What names no signal goes as written, for runc to refuse."""
    if isinstance(sig, int):
        return int(sig)
    num = signals.number(sig)
    return num if num is not None else sig.strip()
