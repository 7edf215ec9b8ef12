"""CheckpointContainer on the real parts: runc checkpoint --leave-running
through CRIU into the archive CRI-O writes and checkpointctl reads.

Where `criu check` fails (these hosts' 6.18 kernel: "vdso: Failed to fill self
vdso symtable") the call is refused with CRIU's own words; the real checkpoint
runs where it passes (the cgroup-v2 VM lane's 6.1 kernel). Either way nothing
is left behind: no temporary dir beside the container's files, no partial
archive at the location."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.test_containers import (
    _config,
    _create,
    _exec,
    _module_daemon,
    _pod,
    _remove_pod,
    _running,
    _status,
    _wait_exit,
)
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonProcess
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry
from tests.support.slow import FACTOR

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/criu"), reason="needs Debian's criu (scripts/install-test-deps.sh)"),
]


def _criu_check() -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/sbin/criu", "check"], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry) as proc:
        yield proc


def _checkpoint(c: CriClient, cid: str, location: str | Path, timeout: int = 0) -> object:
    return c.runtime.checkpoint_container(cri.CheckpointContainerRequest(container_id=cid, location=str(location),
                                                                         timeout=timeout))


async def _refused(c: CriClient, cid: str, location: str | Path, timeout: int = 0) -> GRPCError:
    with pytest.raises(GRPCError) as err:
        await _checkpoint(c, cid, location, timeout)
    return err.value


def _nothing_left(daemon: DaemonProcess, cid: str, out_dir: Path | None = None) -> None:
    """No temporary dir beside the container's files; no archive or partial one where it was to go."""
    left = [p.name for p in (daemon.dirs.root / "containers" / cid).iterdir() if p.name.startswith("checkpoint")]
    assert left == [], left
    assert out_dir is None or list(out_dir.iterdir()) == []


async def test_bad_requests_and_states_are_refused(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        cid = await _running(c, registry, pod, "ckpt-bad")
        out = tmp_path / "out"
        out.mkdir()
        for location, status, words in (("", Status.INVALID_ARGUMENT, "location: empty"),
                                         ("ckpt.tar", Status.INVALID_ARGUMENT, "not an absolute path"),
                                         (str(out), Status.INVALID_ARGUMENT, "is a directory"),
                                         (str(out / "no" / "ckpt.tar"), Status.FAILED_PRECONDITION, "does not exist")):
            err = await _refused(c, cid, location)
            assert err.status == status and words in (err.message or ""), (location, err)
        err = await _refused(c, "0123456789abcdef", out / "ckpt.tar")
        assert err.status == Status.NOT_FOUND, err

        created = await _create(c, pod, _config(registry, "ckpt-created", command=["/bin/sleep", "1000"]))
        err = await _refused(c, created, out / "ckpt.tar")
        assert err.status == Status.FAILED_PRECONDITION and "created, not running" in (err.message or ""), err
        exited = await _create(c, pod, _config(registry, "ckpt-exited", command=["/bin/true"]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=exited))
        await _wait_exit(c, exited)
        err = await _refused(c, exited, out / "ckpt.tar")
        assert err.status == Status.FAILED_PRECONDITION and "exited, not running" in (err.message or ""), err
        for container in (cid, created, exited):
            _nothing_left(daemon, container, out)
        await _remove_pod(c, pod[0])


async def test_refused_with_criu_own_message_where_criu_check_fails(daemon: DaemonProcess, registry: Registry,
                                                                    tmp_path: Path) -> None:
    check = _criu_check()
    if check.returncode == 0:
        pytest.skip("criu check passes on this kernel: test_checkpoint_of_a_running_container checkpoints for real")
    causes = [line for line in check.stderr.splitlines() if line.startswith("Error")]
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        cid = await _running(c, registry, pod, "ckpt-refused")
        timings = []
        for _ in range(20):  # the first asks criu, the rest get the cached answer
            t = time.perf_counter()
            err = await _refused(c, cid, tmp_path / "ckpt.tar")
            timings.append((time.perf_counter() - t) * 1000)
            assert err.status == Status.FAILED_PRECONDITION and "criu" in (err.message or ""), err
            assert causes and all(cause in (err.message or "") for cause in causes), (causes, err)
        print(f"\nrefusal: first {timings[0]:.1f} ms (criu check), then median {sorted(timings[1:])[9]:.2f} ms")
        assert (await _status(c, cid)).state == cri.ContainerState.CONTAINER_RUNNING
        _nothing_left(daemon, cid, tmp_path)
        await _remove_pod(c, pod[0])


@pytest.mark.cgroups  # the lane's kernel is where criu check passes
async def test_checkpoint_of_a_running_container(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    check = _criu_check()
    if check.returncode != 0:
        pytest.skip(f"criu check fails on this kernel ({'; '.join(check.stderr.strip().splitlines())}); "
                    "test_refused_with_criu_own_message_where_criu_check_fails covers the refusal")
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        script = "echo checkpointed > /written; rm /etc/group; n=0; while true; do n=$((n+1)); echo $n > /tmp/n; sleep 0.1; done"
        cid = await _create(c, pod, _config(registry, "ckpt-app", command=["/bin/sh", "-c", script]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        while (await _exec(c, cid, "cat", "/tmp/n")).exit_code != 0:
            await asyncio.sleep(0.1)
        archive = tmp_path / "ckpt.tar"
        archive.write_text("an older checkpoint, replaced")
        t = time.perf_counter()
        await _checkpoint(c, cid, archive, timeout=int(120 * FACTOR))
        took = (time.perf_counter() - t) * 1000
        print(f"\ncheckpoint of a busybox shell loop: {took:.0f} ms, archive {archive.stat().st_size} bytes")

        assert (await _status(c, cid)).state == cri.ContainerState.CONTAINER_RUNNING  # it keeps running
        before = int((await _exec(c, cid, "cat", "/tmp/n")).stdout)
        await asyncio.sleep(0.5 * FACTOR)
        assert int((await _exec(c, cid, "cat", "/tmp/n")).stdout) > before  # not left frozen
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # every page of its memory is in there
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
            assert {"checkpoint/inventory.img", "config.dump", "spec.dump", "dump.log", "rootfs-diff.tar",
                    "deleted.files"} <= names, sorted(names)
            assert any(n.startswith("checkpoint/pages-") for n in names), sorted(names)
            config = json.load(tar.extractfile("config.dump"))  # type: ignore[arg-type]
            spec = json.load(tar.extractfile("spec.dump"))  # type: ignore[arg-type]
            deleted = json.load(tar.extractfile("deleted.files"))  # type: ignore[arg-type]
            diff = tarfile.open(fileobj=tar.extractfile("rootfs-diff.tar"))
            written = diff.extractfile("written").read()  # type: ignore[union-attr]
            diff_names = diff.getnames()
        assert config["id"] == cid and config["name"] == "ckpt-app" and config["runtime"] == "runc"
        assert config["checkpointedTime"] > config["createdTime"]
        annotations = spec["annotations"]
        assert annotations["io.kubernetes.cri.container-name"] == "ckpt-app"
        assert annotations["io.kubernetes.cri.sandbox-name"] == pod[1].metadata.name
        assert annotations["io.kubernetes.cri.sandbox-namespace"] == "test"
        assert written == b"checkpointed\n" and "/etc/group" in deleted
        assert not any(n in ("etc/hosts", "etc/resolv.conf", "dev", "proc") for n in diff_names), diff_names
        assert [p.name for p in tmp_path.iterdir()] == ["ckpt.tar"]  # no partial one beside it
        _nothing_left(daemon, cid)
        await _remove_pod(c, pod[0])
