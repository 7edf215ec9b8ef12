"""OciRuntime against the real runc and conmon, with a catatonit-only bundle.

Each test gets its own short base dir (runc root, bundles, exit/persist/socket
dirs), unique container ids and its own cgroups under /podrt-test; the fixture
deletes the containers, removes the cgroups and waits until no process of the
test (conmon, runc, container init) is left, zombies included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrt.aio import reaper
from podrt.host import procfs
from podrt.host.cgroups.hierarchy import CGROUP_ROOT, hierarchies, unified
from podrt.oci import conmon as conmon_mod
from podrt.oci.conmon import ConmonSpec, conmon_argv, parse_sync_reply
from podrt.oci.runtime import ContainerProcess, OciRuntime, OciRuntimeError, runc_error_text

RUNC = "/usr/sbin/runc"
CONMON = "/usr/bin/conmon"
CATATONIT = "/usr/bin/catatonit"
CGROUP_PARENT = "podrt-test"


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root"
    absent = [p for p in (RUNC, CONMON, CATATONIT) if not os.access(p, os.X_OK)]
    return f"missing {', '.join(absent)}" if absent else ""


def on_host(test):
    """Root-marked and skipped, with the reason, when the host lacks root or a binary."""
    reason = _missing()
    return pytest.mark.root(pytest.mark.skipif(bool(reason), reason=reason or "host ready")(test))


# ------------------------------------------------------------------ helpers


def _proc_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _pids_mentioning(container_id: str) -> list[int]:
    """conmon/runc processes whose command line names the container."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if comm in ("conmon", "runc", "runc:[2:INIT]") and container_id.encode() in cmdline:
            found.append(int(entry))
    return found


def _wait_vanished(pids: set[int], timeout: float = 15.0) -> list[int]:
    """Wait until the pids are gone from /proc (PID 1 here reaps orphans only every ~2s)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _proc_exists(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _remove_cgroup(relative: str) -> None:
    for controller in hierarchies():
        path = controller / relative
        for _ in range(50):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


class Host:
    """One test's dirs, runtime and bookkeeping of what to clean up."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.runc_root = base / "runc"
        self.exit_dir = base / "exits"
        self.socket_dir = base / "s"
        self.runtime = OciRuntime(RUNC, str(self.runc_root), CONMON)
        self.ids: list[str] = []
        self.pids: set[int] = set()
        self.cgroups: list[str] = []

    def new_id(self) -> str:
        cid = uuid.uuid4().hex
        self.ids.append(cid)
        self.cgroups.append(f"{CGROUP_PARENT}/podrt-{cid}")
        return cid

    def persist_dir(self, cid: str) -> Path:
        return self.base / "ctr" / cid

    def log_path(self, cid: str) -> Path:
        return self.base / "logs" / f"{cid}.log"

    def bundle(self, cid: str, args: list[str] | None = None) -> Path:
        """rootfs with /catatonit, config from `runc spec`, made read-only and cgroup-scoped."""
        bundle = self.base / "bundles" / cid
        rootfs = bundle / "rootfs"
        for d in ("proc", "sys", "dev"):
            (rootfs / d).mkdir(parents=True)
        shutil.copy2(CATATONIT, rootfs / "catatonit")
        subprocess.run([RUNC, "spec"], cwd=bundle, check=True, capture_output=True)
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["args"] = args or ["/catatonit", "-P"]
        config["process"]["terminal"] = False
        config["root"]["readonly"] = True
        config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/podrt-{cid}"
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    async def create(self, cid: str, bundle: Path, **kw) -> ContainerProcess:
        try:
            proc = await self.runtime.create(
                cid, bundle, log_path=self.log_path(cid), exit_dir=self.exit_dir,
                persist_dir=self.persist_dir(cid), socket_dir=self.socket_dir, **kw,
            )
        finally:
            self._remember_pids(cid)
        self.pids.update((proc.pid, proc.conmon_pid))
        return proc

    def _remember_pids(self, cid: str) -> None:
        pid = conmon_mod.read_pidfile(self.persist_dir(cid) / conmon_mod.CONMON_PIDFILE)
        if pid:
            self.pids.add(pid)

    def cleanup(self) -> list[str]:
        """Delete every container, remove cgroups and dirs; return what was left behind."""
        for cid in self.ids:
            subprocess.run([RUNC, "--root", str(self.runc_root), "delete", "--force", cid], capture_output=True)
        for cid in self.ids:
            self.pids.update(_pids_mentioning(cid))
        left = [f"pid {p}" for p in _wait_vanished(self.pids)]
        for relative in self.cgroups:
            _remove_cgroup(relative)
        _remove_cgroup(CGROUP_PARENT)  # fails quietly while others still use it
        shutil.rmtree(self.base, ignore_errors=True)
        return left


@pytest.fixture
def host() -> Iterator[Host]:
    h = Host(Path(tempfile.mkdtemp(prefix="podrt-oci-")))
    try:
        yield h
    finally:
        left = h.cleanup()
    assert not left, f"test left processes behind: {left}"


async def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# -------------------------------------------------------- no host needed


def test_runc_error_text_json_and_logrus() -> None:
    json_line = b'{"level":"error","msg":"container does not exist","time":"2026-01-01T00:00:00Z"}\n'
    assert runc_error_text(json_line) == "container does not exist"
    logrus = 'time="x" level=warning msg="w"\ntime="x" level=error msg="exec: \\"/nope\\": stat /nope"\n'
    assert runc_error_text(logrus) == 'exec: "/nope": stat /nope'
    assert runc_error_text("plain\ntext\n") == "plain; text"


def test_parse_sync_reply_both_api_versions() -> None:
    assert parse_sync_reply(b'{"pid": 42}\n').pid == 42
    failed = parse_sync_reply(b'{"data": -1, "message": "boom\\n"}\n')
    assert (failed.pid, failed.message) == (-1, "boom\n")
    with pytest.raises(conmon_mod.ConmonError):
        parse_sync_reply(b"garbage")


def test_conmon_argv_uses_short_socket_dir_not_full_attach() -> None:
    spec = ConmonSpec(
        conmon_path=CONMON, runtime_path=RUNC, runtime_root="/run/podrt/runc", container_id="c" * 64,
        bundle=Path("/var/lib/podrt/" + "x" * 200), log_path=Path("/var/log/pods/c.log"),
        exit_dir=Path("/run/podrt/exits"), persist_dir=Path("/var/lib/podrt/c"), socket_dir=Path("/run/podrt/s"),
    )
    argv = conmon_argv(spec)
    assert "--full-attach" not in argv
    assert argv[argv.index("--runtime-arg") + 1] == "--root=/run/podrt/runc"
    assert argv[argv.index("-l") + 1] == "k8s-file:/var/log/pods/c.log"
    attach = conmon_mod.attach_socket_link(spec.socket_dir, spec.container_id) / "attach"
    assert len(str(attach).encode()) < 108


# ------------------------------------------------------------ real host


@on_host
async def test_create_start_stop_delete(host: Host) -> None:
    rt = host.runtime
    cid = host.new_id()
    proc = await host.create(cid, host.bundle(cid))

    st = await rt.state(cid)
    assert st is not None and st["status"] == "created" and st["pid"] == proc.pid
    await rt.start(cid)
    st = await rt.state(cid)
    assert st["status"] == "running"
    assert procfs.pid_running(proc.pid) and procfs.pid_running(proc.conmon_pid)
    assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "catatonit"
    assert Path(f"/proc/{proc.conmon_pid}/comm").read_text().strip() == "conmon"
    persist = host.persist_dir(cid)
    assert conmon_mod.read_pidfile(persist / conmon_mod.CONMON_PIDFILE) == proc.conmon_pid
    assert conmon_mod.read_pidfile(persist / conmon_mod.CONTAINER_PIDFILE) == proc.pid
    assert host.log_path(cid).is_file()
    assert (host.socket_dir / cid).is_symlink()
    assert rt.exit_code(host.exit_dir, cid) is None

    await rt.stop(cid, timeout=10, exit_dir=host.exit_dir)
    code = rt.exit_code(host.exit_dir, cid)
    assert code is not None
    assert (await rt.state(cid))["status"] == "stopped"
    assert not procfs.pid_running(proc.pid)
    assert await _wait_for(lambda: not procfs.pid_running(proc.conmon_pid)), "conmon outlived its container"
    await rt.stop(cid, timeout=1)  # stopped: nothing to do

    await rt.delete(cid, socket_dir=host.socket_dir)
    assert await rt.state(cid) is None
    assert not (host.socket_dir / cid).exists()
    await rt.delete(cid, socket_dir=host.socket_dir)


@on_host
async def test_stop_escalates_to_sigkill(host: Host) -> None:
    """A stop signal the init ignores: after the grace period SIGKILL, exit code 137."""
    rt = host.runtime
    cid = host.new_id()
    proc = await host.create(cid, host.bundle(cid))
    await rt.start(cid)
    started = time.monotonic()
    await rt.stop(cid, timeout=0.5, stop_signal="SIGWINCH", exit_dir=host.exit_dir)
    assert time.monotonic() - started >= 0.5
    assert not procfs.pid_running(proc.pid)
    assert rt.exit_code(host.exit_dir, cid) == 137
    await rt.delete(cid)


def _pidfds() -> int:
    """How many pidfds this process holds."""
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            held += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
    return held


@on_host
async def test_stop_with_the_recorded_pids_needs_no_runc_state(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The init is conmon's child: the recorded pids check out in /proc, so no
    `runc state` runs, and with its own PID namespace no `runc kill` either (a
    pidfd's signal); pids that do not (another process's) fall back to both."""
    rt = host.runtime
    cid, other = host.new_id(), host.new_id()
    proc = await host.create(cid, host.bundle(cid))
    proc2 = await host.create(other, host.bundle(other))
    await rt.start(cid)
    await rt.start(other)
    assert conmon_mod.is_monitored(cid, proc.pid, proc.conmon_pid)
    assert not conmon_mod.is_monitored(cid, proc2.pid, proc2.conmon_pid)  # another container's conmon
    assert not conmon_mod.is_monitored(cid, os.getpid(), proc.conmon_pid)  # not conmon's child
    states: list[str] = []
    real_state = rt.state

    async def counted(container_id: str) -> dict[str, object] | None:
        states.append(container_id)
        return await real_state(container_id)

    kills: list[str] = []
    real_kill = rt.kill

    async def counted_kill(container_id: str, signal: int | str, *, all_processes: bool = False) -> None:
        kills.append(container_id)
        await real_kill(container_id, signal, all_processes=all_processes)

    monkeypatch.setattr(rt, "state", counted)
    monkeypatch.setattr(rt, "kill", counted_kill)
    assert conmon_mod.init_pidfd(cid, proc2.pid, proc2.conmon_pid) is None  # does not check out: no pidfd kept
    reaper.reap_all_now()  # the runc children's pidfds, the reaper's until it reaps them, closed now
    pidfds, opened, real_open = _pidfds(), [], os.pidfd_open

    def counted_open(pid: int, flags: int = 0) -> int:
        opened.append(pid)
        return real_open(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", counted_open)
    await rt.stop(cid, timeout=10, exit_dir=host.exit_dir, pids=(proc.pid, proc.conmon_pid), own_pidns=True)
    assert states == [] and kills == [] and not procfs.pid_running(proc.pid)
    assert opened == [proc.pid] and _pidfds() == pidfds  # one pidfd of the init, for the check, signal and wait; closed
    assert rt.exit_code(host.exit_dir, cid) is not None  # awaited, not polled for
    await rt.stop(other, timeout=10, exit_dir=host.exit_dir, pids=(proc.pid, proc.conmon_pid),  # stale: cid's
                  own_pidns=True)
    assert states == [other] and kills == [other] and not procfs.pid_running(proc2.pid)
    assert rt.exit_code(host.exit_dir, other) is not None
    await rt.delete(cid, socket_dir=host.socket_dir)
    await rt.delete(other, socket_dir=host.socket_dir)


@on_host
async def test_unknown_container_is_not_an_error(host: Host) -> None:
    rt = host.runtime
    cid = uuid.uuid4().hex
    assert await rt.state(cid) is None
    await rt.stop(cid, timeout=1)
    await rt.kill(cid, "SIGTERM")
    await rt.kill(cid, 9, all_processes=True)
    await rt.delete(cid)
    await rt.delete(cid, socket_dir=host.socket_dir)
    with pytest.raises(OciRuntimeError, match="does not exist"):
        await rt.start(cid)


@on_host
async def test_create_failure_reports_runc_error_and_leaves_nothing(host: Host) -> None:
    rt = host.runtime
    cid = host.new_id()
    with pytest.raises(OciRuntimeError) as info:
        await host.create(cid, host.bundle(cid, args=["/no-such-binary"]))
    message = str(info.value)
    assert "/no-such-binary" in message and cid in message, message
    assert "\n" not in message and "Traceback" not in message
    assert await rt.state(cid) is None
    assert not (host.socket_dir / cid).exists()
    conmon_pid = conmon_mod.read_pidfile(host.persist_dir(cid) / conmon_mod.CONMON_PIDFILE)
    if conmon_pid is not None:
        assert not procfs.pid_running(conmon_pid)
    assert not [p for p in _pids_mentioning(cid) if procfs.pid_running(p)]


@on_host
async def test_create_failure_before_conmon_runs(host: Host) -> None:
    """An unwritable conmon cgroup: the launcher is killed before it forks anything."""
    cid = host.new_id()
    with pytest.raises(OciRuntimeError, match="cannot move conmon into"):
        await host.create(cid, host.bundle(cid), conmon_cgroup_procs=[host.base / "nope" / "cgroup.procs"])
    assert await host.runtime.state(cid) is None
    assert not [p for p in _pids_mentioning(cid) if procfs.pid_running(p)]


@on_host
async def test_conmon_joins_given_cgroup(host: Host) -> None:
    rt = host.runtime
    cid = host.new_id()
    cgroup = (CGROUP_ROOT if unified() else CGROUP_ROOT / "pids") / f"podrt-test-conmon-{cid}"
    cgroup.mkdir()
    host.cgroups.append(cgroup.name)
    proc = await host.create(cid, host.bundle(cid), conmon_cgroup_procs=[cgroup / "cgroup.procs"])
    await rt.start(cid)
    assert str(proc.conmon_pid) in (cgroup / "cgroup.procs").read_text().split()
    assert str(proc.pid) not in (cgroup / "cgroup.procs").read_text().split()  # runc moved it to its own
    await rt.stop(cid, timeout=10)
    await rt.delete(cid, socket_dir=host.socket_dir)
    assert await _wait_for(lambda: not _proc_exists(proc.conmon_pid), timeout=15)


def _hanging_runc(host: Host) -> tuple[OciRuntime, Path]:
    """A runc whose `create` hangs (exec'd sleep, so conmon's PDEATHSIG reaches it); the rest is real runc."""
    pidfile = host.base / "hung-create.pid"
    script = host.base / "hanging-runc"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = create ] && {{ echo $$ > {pidfile}; exec sleep 1000; }}; done\n'
        f'exec {RUNC} "$@"\n'
    )
    script.chmod(0o755)
    return OciRuntime(str(script), str(host.runc_root), CONMON), pidfile


async def _create_with(host: Host, rt: OciRuntime, cid: str, **kw) -> ContainerProcess:
    return await rt.create(cid, host.bundle(cid), log_path=host.log_path(cid), exit_dir=host.exit_dir,
                           persist_dir=host.persist_dir(cid), socket_dir=host.socket_dir, **kw)


async def _assert_nothing_left(host: Host, cid: str, hung_pidfile: Path) -> None:
    conmon_pid = conmon_mod.read_pidfile(host.persist_dir(cid) / conmon_mod.CONMON_PIDFILE)
    assert conmon_pid is not None, "conmon had started"
    host.pids.add(conmon_pid)
    assert not procfs.pid_running(conmon_pid)
    hung = conmon_mod.read_pidfile(hung_pidfile)
    assert hung is not None, "the hanging create had started"
    host.pids.add(hung)
    assert await _wait_for(lambda: not procfs.pid_running(hung), timeout=5), "hung runc create survived"
    assert not (host.socket_dir / cid).exists()


@on_host
async def test_create_timeout_kills_conmon_and_runc(host: Host) -> None:
    rt, hung_pidfile = _hanging_runc(host)
    cid = host.new_id()
    with pytest.raises(OciRuntimeError, match="timed out after 1.5s"):
        await _create_with(host, rt, cid, timeout=1.5)
    await _assert_nothing_left(host, cid, hung_pidfile)
    assert await rt.state(cid) is None


@on_host
async def test_cancelled_create_cleans_up(host: Host) -> None:
    rt, hung_pidfile = _hanging_runc(host)
    cid = host.new_id()
    task = asyncio.create_task(_create_with(host, rt, cid))
    assert await _wait_for(hung_pidfile.exists, timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_nothing_left(host, cid, hung_pidfile)
