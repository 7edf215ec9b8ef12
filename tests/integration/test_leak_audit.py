"""The suite's leak audit counts podrt's resources only: another runtime's
netns, links and conmon on the same node do not fail the suite (containerd's
did, 16 runs in 40), while what podrt leaves is still reported, user
namespace pins and ID-mapped mounts included."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrt.host.idmap import clone_into, release
from podrt.host.nspin import create_userns, remove_pin
from podrt.network.netns import create_netns, remove_netns
from tests.support.daemon import DaemonDirs
from tests.support.leaks import audit_daemon_dirs, snapshot

pytestmark = pytest.mark.root

ADMIN_NETNS = Path("/run/netns")  # where `ip netns` and containerd pin theirs


@contextlib.contextmanager
def _process(directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A copy of sleep named conmon, run from `directory`; killed by its PID at the end."""
    binary = directory / "conmon"
    shutil.copy("/bin/sleep", binary)
    proc = subprocess.Popen([str(binary), "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def _links(bridge: str, veth: str, peer: str) -> Iterator[None]:
    """A bridge with one end of a veth pair on it (the way CNI's bridge plugin
    leaves a pod's host side); both deleted at the end."""
    try:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer], check=True)
        subprocess.run(["ip", "link", "set", veth, "master", bridge], check=True)
        yield
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)  # its peer goes with it
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


async def test_audit_ignores_another_runtimes_resources_and_reports_podrts() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (netns, links)")
    tag = secrets.token_hex(4)
    made_admin_dir = not ADMIN_NETNS.exists()
    foreign = Path(tempfile.mkdtemp(prefix="foreign-runtime-"))
    ours = Path(tempfile.mkdtemp(prefix="podrt-test-"))
    before = snapshot()
    pins: list[Path] = []
    try:
        with _process(foreign) as other_conmon, _links(f"frgnbr{tag}", f"vethf{tag}", f"pf{tag}"), \
                _process(ours) as our_conmon, _links(f"podrtlk{tag}", f"vethp{tag}", f"pp{tag}"):
            pins.append(await create_netns(ADMIN_NETNS, f"foreign-{tag}"))
            pins.append(await create_netns(ours / "run" / "netns", tag * 8))
            reported = before.diff(snapshot())
            # (another test session on this host may add podrt resources of its own meanwhile: only ours are asserted)
            everything = {item for items in reported.values() for item in items}
            foreign_items = {str(pins[0]), f"frgnbr{tag}", f"vethf{tag}", f"pf{tag}", f"{other_conmon.pid}:conmon"}
            assert not everything & foreign_items, reported
            assert f"{our_conmon.pid}:conmon" in reported.get("processes", [])
            assert {f"podrtlk{tag}", f"vethp{tag}"} <= set(reported.get("links", []))
            assert str(pins[1]) in reported.get("netns", []) and str(pins[1]) in reported.get("mounts", [])
    finally:
        for pin in pins:
            await remove_netns(pin)
        if made_admin_dir:
            with contextlib.suppress(OSError):  # only if nobody else put a netns there meanwhile
                ADMIN_NETNS.rmdir()
        shutil.rmtree(foreign, ignore_errors=True)
        shutil.rmtree(ours, ignore_errors=True)


async def test_audit_sees_leaked_user_namespaces_and_id_mapped_mounts() -> None:
    """A pod's pinned user namespace (an nsfs mount) and an ID-mapped clone (a
    container's volume) left in a test daemon's dirs: both audits report them."""
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts)")
    d = DaemonDirs(Path(tempfile.mkdtemp(prefix="podrt-test-")))
    pin, clone = d.runroot / "userns" / ("a" * 64), d.runroot / "idmap" / ("c" * 64) / "binds"
    before = snapshot()
    try:
        await create_userns(pin, "0 1000 10\n", "0 1000 10\n")
        (d.base / "vol").mkdir()
        made = clone_into(clone, "0", str(d.base / "vol"), str(pin), recursive=True)
        reported = before.diff(snapshot())
        assert str(pin) in reported.get("netns", []) and {str(pin), str(made)} <= set(reported.get("mounts", []))
        found = audit_daemon_dirs(d)
        assert found["user namespace pins"] == [pin.name] and found["ID-mapped mounts"] == ["c" * 64]
        assert {str(pin), str(made)} <= set(found["mounts"])
    finally:
        release(clone)
        await remove_pin(pin)
        shutil.rmtree(d.base)
    assert not before.diff(snapshot()).get("mounts")
