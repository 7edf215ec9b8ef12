"""A configured pause image pulled from a registry on 127.0.0.1: pulled at the
first RunPodSandbox, pinned, each pod on an overlay of its layers (120 of
them too), and kept from removal while a pod runs from it."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.test_sandbox_lifecycle import infra_pid, remove_pod, run_pod, status
from tests.integration.test_userns import IDMAP_PROBLEM, userns_pod
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import REGISTRY_BIN, BuiltImage, Registry, image, push

CATATONIT = Path("/usr/bin/catatonit")
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not CATATONIT.is_file(), reason="needs catatonit (a static init) to put in the test pause images"),
]


def _pause(layers: int) -> BuiltImage:
    """`layers` layers: one file each below, the init on top as /pause."""
    below = [{f"layers/l{i:03d}": str(i).encode()} for i in range(layers - 1)]
    return image(*below, {"pause": CATATONIT.read_bytes()}, cmd=("/pause", "-P"), modes={"pause": 0o755})


PAUSE = _pause(2)
PAUSE_120 = _pause(120)


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry(Path(tempfile.mkdtemp(prefix="podrt-registry-")))
    asyncio.run(push(reg, "test/pause", PAUSE, "v1"))
    asyncio.run(push(reg, "test/pause", PAUSE_120, "many"))
    yield reg
    reg.stop()


def _configure(dirs: DaemonDirs, registry: Registry, pause: str) -> None:
    conf = dirs.base / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    dirs.write_config({"image": {"registries_conf": str(conf), "pause_image": pause}})


async def _images(c: CriClient) -> dict[str, cri.Image]:
    return {i.id: i for i in (await c.image.list_images(cri.ListImagesRequest())).images}


async def _writable(c: CriClient) -> cri.FilesystemUsage:
    """ImageFsInfo's container filesystem: the writable layers."""
    return (await c.image.image_fs_info(cri.ImageFsInfoRequest())).container_filesystems[0]


def _root_mount(pid: int) -> list[str]:
    """The infra's mountinfo line for its own root."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields
    raise AssertionError(f"no root mount for {pid}")


async def test_pulled_at_first_use_pinned_and_each_pod_on_an_overlay(net_dirs: DaemonDirs, registry: Registry) -> None:
    _configure(net_dirs, registry, f"{registry.host}/test/pause:v1")
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            assert PAUSE.config_digest not in await _images(c)  # not pulled at start: a registry may be down then
            assert (await _writable(c)).inodes_used.value == 0
            pods = [await run_pod(c, pod_config()) for _ in range(2)]
            writable = await _writable(c)  # runc's mount points in each pod's upper
            assert writable.inodes_used.value >= 2 * 3 and writable.fs_id.mountpoint == str(net_dirs.root)
            pulled = (await _images(c))[PAUSE.config_digest]
            assert pulled.pinned and pulled.repo_tags == [f"{registry.host}/test/pause:v1"]
            with pytest.raises(GRPCError) as err:
                await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=PAUSE.config_digest)))
            assert err.value.status == Status.FAILED_PRECONDITION and "pinned" in (err.value.message or "")
            for pod in pods:
                st = await status(c, pod, verbose=True)
                assert st.status.state == cri.PodSandboxState.SANDBOX_READY
                pid = infra_pid(st)
                assert Path(f"/proc/{pid}/exe").resolve().name == "pause" or os.readlink(f"/proc/{pid}/exe").endswith("/pause")
                root = _root_mount(pid)
                assert "overlay" in root[root.index("-") + 1], root  # fstype after the separator
            layers = net_dirs.root / "images" / "layers"
            for pod in pods:  # runc made its mount points in the pod's own upper, never in the shared layers
                assert (net_dirs.root / "sandboxes" / pod / "rootfs" / "upper" / "proc").is_dir()
            assert not [p for p in layers.glob("*/diff/proc")]
            for pod in pods:
                await remove_pod(c, pod)
            assert not list((net_dirs.root / "sandboxes").iterdir())
            assert (await _writable(c)).inodes_used.value == 0
    finally:
        daemon.stop()
    assert not audit_daemon_dirs(net_dirs)


async def test_a_pause_image_of_120_layers_mounts(net_dirs: DaemonDirs, registry: Registry) -> None:
    """Absolute layer paths would overflow mount(2)'s one page of options;
    the short relative links fit."""
    from podrt.host.overlay import PAGE_LIMIT
    from podrt.images.store import ImageStore

    _configure(net_dirs, registry, f"{registry.host}/test/pause:many")
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            pod = await run_pod(c, pod_config())
            pid = infra_pid(await status(c, pod, verbose=True))
            seen = sorted(p.name for p in Path(f"/proc/{pid}/root/layers").iterdir())
            assert seen == [f"l{i:03d}" for i in range(119)]
            store = ImageStore(net_dirs.root / "images")
            store.load_records()
            layers = store.get(PAUSE_120.config_digest).layers  # type: ignore[union-attr]
            absolute = ":".join(str(store.layer_dir(chain) / "diff") for chain in layers)
            assert len(absolute) > PAGE_LIMIT  # the test means something: this would not have mounted
            await remove_pod(c, pod)
    finally:
        daemon.stop()
    assert not audit_daemon_dirs(net_dirs)


async def test_an_earlier_pause_image_is_kept_while_a_pod_runs_from_it(net_dirs: DaemonDirs, registry: Registry) -> None:
    _configure(net_dirs, registry, f"{registry.host}/test/pause:v1")
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            pod = await run_pod(c, pod_config())
    finally:
        daemon.stop()
    _configure(net_dirs, registry, "podrt.local/pause:builtin")  # the operator goes back to the builtin
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            old = (await _images(c))[PAUSE.config_digest]
            assert not old.pinned  # only the configured pause image is
            with pytest.raises(GRPCError) as err:
                await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=PAUSE.config_digest)))
            assert err.value.status == Status.FAILED_PRECONDITION
            assert f"in use by pod sandbox {pod}" in (err.value.message or "")
            assert (await status(c, pod)).status.state == cri.PodSandboxState.SANDBOX_READY
            await remove_pod(c, pod)
            await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=PAUSE.config_digest)))
            assert PAUSE.config_digest not in await _images(c)
    finally:
        daemon.stop()
    assert not audit_daemon_dirs(net_dirs)


async def test_an_unreachable_pause_image_fails_the_pod_clearly(net_dirs: DaemonDirs) -> None:
    conf = net_dirs.base / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "127.0.0.1:1"\ninsecure = true\n')  # a closed loopback port
    net_dirs.write_config({"image": {"registries_conf": str(conf), "pause_image": "127.0.0.1:1/pause:v1"}})
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            with pytest.raises(GRPCError) as err:
                await run_pod(c, pod_config())
            assert err.value.status == Status.UNAVAILABLE
            assert (err.value.message or "").startswith("pause image 127.0.0.1:1/pause:v1: ")
            assert not (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items
    finally:
        daemon.stop()
    assert not audit_daemon_dirs(net_dirs)


async def test_a_pod_with_a_user_namespace_runs_its_pulled_pause_image(net_dirs: DaemonDirs, registry: Registry) -> None:
    """The infra's root is an overlay of ID-mapped layers: its init runs as
    the pod's root (host ID 1000), the pause binary the image's root owns shows
    as its own, and runc's mount points land in the upper, owned by 1000."""
    if IDMAP_PROBLEM is not None:
        pytest.skip(f"ID-mapped mounts fail here: {IDMAP_PROBLEM}")
    net_dirs.base.chmod(0o711)
    _configure(net_dirs, registry, f"{registry.host}/test/pause:v1")
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            pod = await run_pod(c, userns_pod())
            pid = infra_pid(await status(c, pod, verbose=True))
            assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "1000", "100000"]
            assert [line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith(("Uid:", "Gid:"))] == ["1000", "1000"]
            assert os.stat(f"/proc/{pid}/root/pause").st_uid == 1000  # the image's 0, through the mapped layer
            upper = net_dirs.root / "sandboxes" / pod / "rootfs" / "upper"
            assert upper.stat().st_uid == 1000 and (upper / "proc").is_dir()
            await remove_pod(c, pod)
    finally:
        daemon.stop()
    assert not audit_daemon_dirs(net_dirs)
