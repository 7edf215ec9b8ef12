"""The infra spec as runc 1.1 sees it: a real `runc run` of catatonit.

Host network, IPC and PID, so no netns is needed; still the builtin seccomp
profile, the read-only rootfs, the capability set, masked paths and the
cgroup settings go through runc for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from podrt.host.cgroups.hierarchy import hierarchies
from podrt.model.sandbox import InfraPlan, NamespaceOptions, NsMode, SandboxConfig
from podrt.sandbox.infra_spec import build_infra_spec
from podrt.security.seccomp import default_profile

RUNC = "/usr/sbin/runc"
CATATONIT = "/usr/bin/catatonit"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runc needs root"),
    pytest.mark.skipif(not os.path.exists(RUNC), reason=f"{RUNC} missing"),
    pytest.mark.skipif(not os.path.exists(CATATONIT), reason=f"{CATATONIT} missing"),
]


def make_bundle(base: Path) -> Path:
    rootfs = base / "bundle" / "rootfs"
    for d in ("proc", "sys", "dev", "etc"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy2(CATATONIT, rootfs / "catatonit")
    (rootfs / "etc" / "hostname").touch()
    (rootfs / "etc" / "resolv.conf").touch()
    return rootfs


def runc(base: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNC, "--root", str(base / "runc"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=check,
        timeout=30,
    )


def remove_cgroups(container_id: str) -> None:
    for controller in hierarchies():
        parent = controller / "podrt-test"
        for d in (parent / f"podrt-{container_id}", parent):
            try:
                d.rmdir()
            except OSError:  # missing, or the parent still used by another test
                pass


def wait_reaped(pid_file: Path, timeout: float = 10.0) -> None:
    """The killed catatonit was reparented to the host's init: wait until init
    has reaped it, so no zombie outlives the test."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)


def test_runc_runs_the_infra_spec() -> None:
    container_id = f"podrt-spec-{uuid.uuid4().hex[:12]}"
    base = Path(tempfile.mkdtemp(prefix="podrt-spec-"))
    try:
        rootfs = make_bundle(base)
        (base / "hostname").write_text("node\n")
        (base / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        (base / "shm").mkdir()
        plan = InfraPlan(
            sandbox_id=container_id,
            config=SandboxConfig(
                name="spec",
                uid="uid-spec",
                namespace="default",
                namespaces=NamespaceOptions(network=NsMode.NODE, pid=NsMode.POD, ipc=NsMode.POD),
            ),
            rootfs=str(rootfs),
            process_args=("/catatonit", "-P"),
            hostname="",
            hostname_file=str(base / "hostname"),
            resolv_conf=str(base / "resolv.conf"),
            shm_path=str(base / "shm"),  # a plain dir does for a bind
            netns_path=None,
            cgroups_path=f"/podrt-test/podrt-{container_id}",
            oom_score_adj=None,  # no CAP_SYS_RESOURCE here for negative values
            cpu_shares=2,
            sysctls={"kernel.shm_rmid_forced": "1"},
            seccomp=default_profile(),
            annotations={"io.podrt.test": "spec"},
        )
        spec = build_infra_spec(plan)
        (base / "bundle" / "config.json").write_text(json.dumps(spec, indent=2))

        try:
            # The detached container inherits runc's stdio: a pipe would stay
            # open for as long as catatonit runs, so errors go to a file.
            err = base / "run.err"
            with open(err, "w") as err_file:
                started = subprocess.run(
                    [RUNC, "--root", str(base / "runc"), "run", "-d", "--bundle", str(base / "bundle"),
                     "--pid-file", str(base / "pid"), container_id],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err_file,
                    timeout=30,
                )  # fmt: skip
            assert started.returncode == 0, err.read_text()

            state = json.loads(runc(base, "state", container_id).stdout)
            assert state["status"] == "running"
            assert state["annotations"] == {"io.podrt.test": "spec"}
            pid = int((base / "pid").read_text())
            assert state["pid"] == pid
            # Still running a moment later: catatonit got through its set-up
            # under the seccomp profile and capabilities.
            time.sleep(0.3)
            assert json.loads(runc(base, "state", container_id).stdout)["status"] == "running"
            status = Path(f"/proc/{pid}/status").read_text()
            assert "NoNewPrivs:\t1" in status
            assert "Seccomp:\t2" in status
            assert Path(f"/proc/{pid}/ns/net").readlink() == Path("/proc/self/ns/net").readlink()
            assert Path(f"/proc/{pid}/ns/pid").readlink() != Path("/proc/self/ns/pid").readlink()

            runc(base, "kill", container_id, "KILL")
            deadline = time.monotonic() + 10
            while json.loads(runc(base, "state", container_id).stdout)["status"] != "stopped":
                assert time.monotonic() < deadline, "container did not stop after SIGKILL"
                time.sleep(0.05)
        finally:
            runc(base, "delete", "-f", container_id, check=False)
            remove_cgroups(container_id)
            wait_reaped(base / "pid")
    finally:
        shutil.rmtree(base, ignore_errors=True)
