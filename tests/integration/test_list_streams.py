"""The Stream* lists (KEP-5825) on the real daemon: each answers the set its
List* RPC answers, for every filter, in messages of at most
`[podrt.api] list_chunk_size` bytes (set small here, so a few pods make
several messages); no match is a stream of no messages that ends OK; a bad
request and a draining daemon answer with a status, as the List RPCs do."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.fuzz import RawCodec
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry, image, push

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

LIMIT = 1100  # list_chunk_size: pods, containers and their stats are 300-500 bytes each here
EXTRA_IMAGES = 8


def _configure(d: DaemonDirs, registry: Registry, extra: dict[str, Any] | None = None) -> None:
    conf = d.base / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    d.write_config({"image": {"registries_conf": str(conf)}, **(extra or {})})


class Node:
    """What the module's daemon holds: pods 0-3 ready (labels app=a for even
    ones), pod 4 stopped; in pods 0-2 a running and a created container."""

    def __init__(self, sock: Path, busybox: str) -> None:
        self.sock, self.busybox = sock, busybox
        self.pods: list[str] = []
        self.running: list[str] = []
        self.created: list[str] = []

    async def make(self, c: CriClient) -> None:
        for i in range(5):
            cfg = pod_config(labels={"app": "a" if i % 2 == 0 else "b", "idx": str(i)},
                             annotations={"note": "x" * 300})
            pod = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
            self.pods.append(pod)
            if i < 3:
                for name, start in (("run", True), ("idle", False)):
                    ctr = cri.ContainerConfig(
                        metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=self.busybox),
                        command=["/bin/sleep", "1000"], log_path=f"{name}.log", labels={"role": name},
                        annotations={"note": "y" * 100},
                        linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                            namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.CONTAINER))))
                    cid = (await c.runtime.create_container(cri.CreateContainerRequest(
                        pod_sandbox_id=pod, config=ctr, sandbox_config=cfg))).container_id
                    if start:
                        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
                        self.running.append(cid)
                    else:
                        self.created.append(cid)
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=self.pods[4]))


@pytest.fixture(scope="module")
def node(registry: Registry) -> Iterator[Node]:
    """The module's daemon (chunks of LIMIT bytes) and what it holds; at the end
    every pod gone, nothing left behind."""
    with _network_dirs() as d:
        _configure(d, registry, {"api": {"listen": str(d.socket), "list_chunk_size": LIMIT}})
        proc = DaemonProcess(d).start()
        busybox = f"{registry.host}/test/busybox:v1"

        async def make() -> Node:
            for i in range(EXTRA_IMAGES):  # distinct images, so the image list has a few chunks too
                await push(registry, "test/many", image({"f": b"%d" % i}, cmd=(f"/bin/x{i}",)), f"t{i}")
            n = Node(d.socket, busybox)
            async with connect(d.socket) as c:
                for ref in [busybox] + [f"{registry.host}/test/many:t{i}" for i in range(EXTRA_IMAGES)]:
                    await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=ref)))
                await n.make(c)
            return n

        try:
            yield asyncio.run(make())
        finally:
            asyncio.run(remove_all_pods(d.socket))
            proc.stop()
        leftovers = audit_daemon_dirs(d)
        assert not leftovers, f"pods left resources behind: {leftovers}"


async def _raw_stream(sock: Path, service: str, method: str, request: bytes) -> list[bytes]:
    """Every message of a server stream, as the bytes on the wire (their sizes are the point)."""
    channel = Channel(path=str(sock), codec=RawCodec())
    try:
        async with channel.request(f"/runtime.v1.{service}/{method}", Cardinality.UNARY_STREAM, bytes, bytes) as s:
            await s.send_message(request, end=True)
            return [m async for m in s]
    finally:
        channel.close()


async def _raw_unary(sock: Path, service: str, method: str, request: bytes) -> bytes:
    channel = Channel(path=str(sock), codec=RawCodec())
    try:
        async with channel.request(f"/runtime.v1.{service}/{method}", Cardinality.UNARY_UNARY, bytes, bytes) as s:
            await s.send_message(request, end=True)
            return await s.recv_message()  # type: ignore[no-any-return]
    finally:
        channel.close()


@dataclass(frozen=True)
class Pair:
    """A List RPC and its Stream twin: their requests take the same filter, their responses list as field 1."""
    service: str
    list_method: str
    list_types: tuple[type[Any], type[Any], str]  # request, response, the list's field name
    stream_method: str
    stream_types: tuple[type[Any], type[Any], str]

    async def both(self, sock: Path, filter_msg: Any) -> tuple[list[Any], list[list[Any]], list[bytes]]:
        """(List's items, Stream's items per message, Stream's messages on the wire) for one filter."""
        kw = {} if filter_msg is None else {"filter": filter_msg}
        req, resp, field = self.list_types
        listed = getattr(resp().parse(await _raw_unary(sock, self.service, self.list_method, bytes(req(**kw)))), field)
        req, resp, field = self.stream_types
        wire = await _raw_stream(sock, self.service, self.stream_method, bytes(req(**kw)))
        return listed, [getattr(resp().parse(m), field) for m in wire], wire


PAIRS = {
    "pods": Pair("RuntimeService", "ListPodSandbox", (cri.ListPodSandboxRequest, cri.ListPodSandboxResponse, "items"),
                 "StreamPodSandboxes", (cri.StreamPodSandboxesRequest, cri.StreamPodSandboxesResponse, "pod_sandboxes")),
    "containers": Pair("RuntimeService", "ListContainers", (cri.ListContainersRequest, cri.ListContainersResponse, "containers"),
                       "StreamContainers", (cri.StreamContainersRequest, cri.StreamContainersResponse, "containers")),
    "container stats": Pair(
        "RuntimeService", "ListContainerStats", (cri.ListContainerStatsRequest, cri.ListContainerStatsResponse, "stats"),
        "StreamContainerStats", (cri.StreamContainerStatsRequest, cri.StreamContainerStatsResponse, "container_stats")),
    "pod stats": Pair(
        "RuntimeService", "ListPodSandboxStats", (cri.ListPodSandboxStatsRequest, cri.ListPodSandboxStatsResponse, "stats"),
        "StreamPodSandboxStats", (cri.StreamPodSandboxStatsRequest, cri.StreamPodSandboxStatsResponse, "pod_sandbox_stats")),
    "images": Pair("ImageService", "ListImages", (cri.ListImagesRequest, cri.ListImagesResponse, "images"),
                   "StreamImages", (cri.StreamImagesRequest, cri.StreamImagesResponse, "images")),
}
STATS = ("container stats", "pod stats")  # read anew at each call: only their IDs compare


def _key(item: Any) -> str:
    return item.attributes.id if isinstance(item, cri.ContainerStats | cri.PodSandboxStats) else item.id  # type: ignore[no-any-return]


async def _both(sock: Path, what: str, filter_msg: Any) -> tuple[list[Any], list[list[Any]], list[bytes]]:
    return await PAIRS[what].both(sock, filter_msg)


def _check_chunks(per_message: list[list[Any]], wire: list[bytes]) -> None:
    """Each message within the limit (or one item alone), none empty, and
    greedy: the next message's first item would not have fitted."""
    assert all(per_message), "a Stream message with no item"
    for items, data in zip(per_message, wire):
        assert len(data) <= LIMIT or len(items) == 1, (len(data), len(items))
    for data, following in zip(wire, wire[1:]):
        first = following[:_entry_length(following)]
        assert len(data) + len(first) > LIMIT


def _entry_length(data: bytes) -> int:
    """Bytes of the first field-1 entry of a message: tag, varint length, body."""
    assert data[0] == 0x0A
    length, shift, i = 0, 0, 1
    while True:
        length |= (data[i] & 0x7F) << shift
        i += 1
        if data[i - 1] < 0x80:
            return i + length
        shift += 7


def _filters(node: Node) -> dict[str, list[Any]]:
    pod, ready, not_ready = node.pods[0], cri.PodSandboxState.SANDBOX_READY, cri.PodSandboxState.SANDBOX_NOTREADY
    running, created = cri.ContainerState.CONTAINER_RUNNING, cri.ContainerState.CONTAINER_CREATED
    return {
        "pods": [None, cri.PodSandboxFilter(id=pod), cri.PodSandboxFilter(id=pod[:12]),
                 cri.PodSandboxFilter(label_selector={"app": "a"}),
                 cri.PodSandboxFilter(state=cri.PodSandboxStateValue(state=ready)),
                 cri.PodSandboxFilter(state=cri.PodSandboxStateValue(state=not_ready)),
                 cri.PodSandboxFilter(label_selector={"app": "a"}, state=cri.PodSandboxStateValue(state=ready))],
        "containers": [None, cri.ContainerFilter(id=node.running[0]), cri.ContainerFilter(id=node.created[1][:12]),
                       cri.ContainerFilter(pod_sandbox_id=pod), cri.ContainerFilter(pod_sandbox_id=node.pods[1][:12]),
                       cri.ContainerFilter(state=cri.ContainerStateValue(state=running)),
                       cri.ContainerFilter(state=cri.ContainerStateValue(state=created)),
                       cri.ContainerFilter(label_selector={"role": "idle"}),
                       cri.ContainerFilter(pod_sandbox_id=pod, state=cri.ContainerStateValue(state=running))],
        "container stats": [None, cri.ContainerStatsFilter(id=node.running[1]), cri.ContainerStatsFilter(pod_sandbox_id=pod),
                            cri.ContainerStatsFilter(label_selector={"role": "run"})],
        "pod stats": [None, cri.PodSandboxStatsFilter(id=node.pods[2]), cri.PodSandboxStatsFilter(label_selector={"app": "b"})],
        "images": [None, cri.ImageFilter(image=cri.ImageSpec(image=node.busybox))],
    }


@pytest.mark.parametrize("what", list(PAIRS))
async def test_each_stream_lists_what_its_list_does_for_every_filter(node: Node, what: str) -> None:
    for filter_msg in _filters(node)[what]:
        listed, per_message, wire = await _both(node.sock, what, filter_msg)
        streamed = [item for items in per_message for item in items]
        assert listed, f"{what}: the filter {filter_msg} selects something here"
        assert [_key(i) for i in streamed] == [_key(i) for i in listed], (what, filter_msg)
        if what not in STATS:
            assert streamed == listed
        _check_chunks(per_message, wire)


async def test_filters_select_what_they_say(node: Node) -> None:
    """The filters above are not vacuous: each picks the expected items."""
    ids = lambda items: {_key(i) for i in items}  # noqa: E731
    listed, _, _ = await _both(node.sock, "pods", cri.PodSandboxFilter(state=cri.PodSandboxStateValue(
        state=cri.PodSandboxState.SANDBOX_NOTREADY)))
    assert ids(listed) == {node.pods[4]}
    listed, _, _ = await _both(node.sock, "pods", cri.PodSandboxFilter(label_selector={"app": "a"}))
    assert ids(listed) == {node.pods[0], node.pods[2], node.pods[4]}
    listed, _, _ = await _both(node.sock, "containers", cri.ContainerFilter(state=cri.ContainerStateValue(
        state=cri.ContainerState.CONTAINER_CREATED)))
    assert ids(listed) == set(node.created)
    listed, _, _ = await _both(node.sock, "container stats", cri.ContainerStatsFilter(pod_sandbox_id=node.pods[0]))
    assert ids(listed) == {node.running[0], node.created[0]}


@pytest.mark.parametrize("what", ["pods", "containers", "container stats", "images"])
async def test_a_whole_list_comes_in_several_chunks_below_the_limit(node: Node, what: str) -> None:
    listed, per_message, wire = await _both(node.sock, what, None)
    assert len(wire) >= 2, (what, [len(m) for m in wire])
    assert any(len(items) > 1 for items in per_message)  # several items to a message where they fit
    assert max(map(len, wire)) <= LIMIT
    if what not in STATS:  # the chunks are the List answer cut at item boundaries
        pair = PAIRS[what]
        assert b"".join(wire) == await _raw_unary(node.sock, pair.service, pair.list_method, b"")


@pytest.mark.parametrize("what, filter_msg", [
    ("pods", cri.PodSandboxFilter(id="f" * 64)),
    ("pods", cri.PodSandboxFilter(label_selector={"app": "none"})),
    ("containers", cri.ContainerFilter(pod_sandbox_id="0" * 64)),
    ("container stats", cri.ContainerStatsFilter(id="e" * 12)),
    ("pod stats", cri.PodSandboxStatsFilter(label_selector={"app": "none"})),
    ("images", cri.ImageFilter(image=cri.ImageSpec(image="example.com/not/here:v9"))),
])
async def test_no_match_is_a_stream_of_no_messages_that_ends_ok(node: Node, what: str, filter_msg: Any) -> None:
    """What containerd and CRI-O send; the kubelet reads to io.EOF and has the same empty list as from List."""
    listed, per_message, _ = await _both(node.sock, what, filter_msg)
    assert listed == [] and per_message == []


async def test_bad_requests_get_the_list_rpcs_status(node: Node) -> None:
    bad_ref = bytes(cri.ListImagesRequest(filter=cri.ImageFilter(image=cri.ImageSpec(image="UPPER/Case::bad"))))
    not_utf8 = b"\x0a\x07\x1a\x05\x0a\x01\xff\x12\x00"  # filter { label_selector { key: b"\xff" value: "" } }
    for service, list_method, stream_method, request in (("ImageService", "ListImages", "StreamImages", bad_ref),
                                                         ("RuntimeService", "ListPodSandbox", "StreamPodSandboxes", not_utf8)):
        with pytest.raises(GRPCError) as listed:
            await _raw_unary(node.sock, service, list_method, request)
        with pytest.raises(GRPCError) as streamed:
            await _raw_stream(node.sock, service, stream_method, request)
        assert listed.value.status == streamed.value.status == Status.INVALID_ARGUMENT, (listed.value, streamed.value)


async def test_the_betterproto_client_sees_the_union(node: Node) -> None:
    """Through the generated stub, as a Python client would read it."""
    async with connect(node.sock) as c:
        streamed = [p async for m in c.runtime.stream_pod_sandboxes(cri.StreamPodSandboxesRequest()) for p in m.pod_sandboxes]
        assert streamed == (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items
        images = [i async for m in c.image.stream_images(cri.StreamImagesRequest()) for i in m.images]
        assert images == (await c.image.list_images(cri.ListImagesRequest())).images


async def test_a_draining_daemon_refuses_a_stream_with_unavailable(registry: Registry, net_dirs: DaemonDirs) -> None:
    """After SIGTERM a new call on an open connection gets UNAVAILABLE, a Stream* call too."""
    _configure(net_dirs, registry)
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            busybox = f"{registry.host}/test/busybox:v1"
            await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=busybox)))
            cfg = pod_config()
            pod = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
            ctr = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="s"), image=cri.ImageSpec(image=busybox),
                                      command=["/bin/sleep", "1000"], log_path="s.log")
            cid = (await c.runtime.create_container(cri.CreateContainerRequest(
                pod_sandbox_id=pod, config=ctr, sandbox_config=cfg))).container_id
            await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
            busy = asyncio.ensure_future(c.runtime.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=["sleep", "2"], timeout=30)))
            await asyncio.sleep(0.5)
            os.kill(daemon.proc.pid, signal.SIGTERM)
            await asyncio.sleep(0.2)
            with pytest.raises(GRPCError) as refused:
                async for _ in c.runtime.stream_pod_sandboxes(cri.StreamPodSandboxesRequest()):
                    pass
            assert refused.value.status == Status.UNAVAILABLE and "shutting down" in (refused.value.message or "")
            assert (await busy).exit_code == 0  # the call in flight still answers
        assert daemon.proc.wait(timeout=60) == 0
    finally:
        daemon.kill()
    restarted = DaemonProcess(net_dirs).start()
    try:
        await remove_all_pods(net_dirs.socket)
    finally:
        restarted.stop()
    assert audit_daemon_dirs(net_dirs) == {}
