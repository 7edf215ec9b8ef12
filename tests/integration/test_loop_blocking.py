"""The event loop never blocks: the real daemon, run with its blocking-call
detector (`[podrt.debug] detect_blocking`, aio/blocking.py), does pod and
container cycles (a pull from the loopback registry, run, create, start,
exec, statuses, lists, stats, stop, remove, creations rolled back at a fault
point) two at a time, and must report no fsync, flock, sleep, child wait, file open
or directory listing on the loop's thread. It also serves the loop-lag probe's
metrics."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import urllib.request

import pytest
from grpclib.exceptions import GRPCError

from podrt.aio.blocking import REPORT
from podrt.api.runtime import v1 as cri
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry
from tests.support.slow import FACTOR

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _cycle(c: CriClient, image: str, verbose: bool) -> None:
    config = pod_config()
    pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
    ctr = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="app"), image=cri.ImageSpec(image=image), command=["sleep", "600"],
        log_path="app.log", linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
            namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.CONTAINER))))
    cid = (await c.runtime.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ctr, sandbox_config=config))).container_id
    await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
    out = await c.runtime.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=["echo", "hi"], timeout=int(10 * FACTOR)))
    assert out.stdout == b"hi\n"
    await c.runtime.container_status(cri.ContainerStatusRequest(container_id=cid, verbose=verbose))
    await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose))
    await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())
    await c.runtime.list_containers(cri.ListContainersRequest())
    await c.runtime.container_stats(cri.ContainerStatsRequest(container_id=cid))
    await c.runtime.list_container_stats(cri.ListContainerStatsRequest())
    await c.runtime.pod_sandbox_stats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod_id))
    await c.image.image_status(cri.ImageStatusRequest(image=cri.ImageSpec(image=image)))
    await c.image.list_images(cri.ListImagesRequest())
    await c.runtime.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
    await c.runtime.container_status(cri.ContainerStatusRequest(container_id=cid))
    await c.runtime.remove_container(cri.RemoveContainerRequest(container_id=cid))
    with pytest.raises(GRPCError):  # a creation that fails, rolled back: the image is not there
        await c.runtime.create_container(cri.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name="none"), image=cri.ImageSpec(image="localhost/absent:1")),
            sandbox_config=config))
    await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


async def _rollbacks(c: CriClient, image: str) -> None:
    """A pod and a container failing at their last step (a fault point each, armed once): every undo runs."""
    config = pod_config()
    with pytest.raises(GRPCError, match="injected fault before state"):
        await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))
    pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
    ctr = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="app"), image=cri.ImageSpec(image=image),
                              command=["true"], log_path="app.log")
    with pytest.raises(GRPCError, match="injected fault before ctr-state"):
        await c.runtime.create_container(cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr, sandbox_config=config))
    await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


async def test_pod_and_container_cycles_never_block_the_loop(registry: Registry) -> None:
    port = _free_port()
    with _network_dirs() as d:
        conf = d.base / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
        d.write_config({"image": {"registries_conf": str(conf)}, "metrics": {"enable_metrics": True, "metrics_port": port},
                        "debug": {"detect_blocking": True, "fault_points": ["state:before", "ctr-state:before"]}})
        proc = DaemonProcess(d).start()
        try:
            image = f"{registry.host}/test/busybox:v1"
            async with connect(d.socket) as c:
                await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
                await c.runtime.status(cri.StatusRequest(verbose=True))
                await c.image.image_fs_info(cri.ImageFsInfoRequest())
                await _rollbacks(c, image)
                for _ in range(2):
                    await asyncio.gather(*(_cycle(c, image, verbose=bool(i)) for i in range(2)))
                await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=image)))
                await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))  # again, from nothing
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        finally:
            await remove_all_pods(d.socket)
            proc.stop()
        assert not audit_daemon_dirs(d)
        log = proc.log()
    reports = _reports(log)
    assert not reports, (f"{len(reports)} blocking call(s) on the event loop, from:\n" + "\n".join(_sites(reports))
                         + "\n\nthe first:\n" + "\n\n".join(reports[:3]))
    assert "debug: 0 blocking call(s) on the event loop were reported" in log  # the detector was on
    count = re.search(r"^podrt_event_loop_lag_seconds_count ([0-9.e+]+)$", text, re.M)
    assert count and float(count.group(1)) > 0, text
    assert re.search(r"^podrt_event_loop_lag_max_seconds [0-9.e+-]+$", text, re.M), text


def _sites(reports: list[str]) -> list[str]:
    """How often each podrt line (the innermost in the stack) made which call."""
    seen: dict[str, int] = {}
    for report in reports:
        call = report.split(f"{REPORT}: ", 1)[1].split("(", 1)[0]
        frames = re.findall(r'File "([^"]*/podrt/[^"]*)", line (\d+), in (\w+)', report)
        where = ":".join(frames[-1]).split("/podrt/", 1)[-1] if frames else "?"
        seen[f"{call} at {where}"] = seen.get(f"{call} at {where}", 0) + 1
    return [f"{n:4d} {site}" for site, n in sorted(seen.items(), key=lambda kv: -kv[1])]


def _reports(text: str) -> list[str]:
    """Each report with its stack (the lines up to the next log record)."""
    return [m.group(0) for m in re.finditer(
        rf"^\S+ \S+ [^\n]*{re.escape(REPORT)}.*?(?=^\d{{4}}-\d\d-\d\d |\Z)", text, re.M | re.S)]
