"""Cached list encodings are byte-for-byte what betterproto would send, in one
List message or in Stream chunks below a size limit."""

from __future__ import annotations

from grpclib.encoding.proto import ProtoCodec
from hypothesis import given
from hypothesis import strategies as st

from podrt.api.runtime import v1 as cri
from podrt.cri import sandbox_convert as conv
from podrt.cri.listcache import ListCache, chunk_bounds, chunked, entries, whole
from podrt.cri.wire import varint
from podrt.model.sandbox import SandboxConfig
from podrt.sandbox.manager import SandboxView
from podrt.state.records import SandboxState


def _view(i: int, ready: bool, labels: dict[str, str]) -> SandboxView:
    cfg = SandboxConfig(name=f"p{i}", uid=f"u{i}", namespace="ns", labels=labels, annotations={"a": "x" * i})
    state = SandboxState(
        id=f"{i:064x}", config=cfg, runtime_handler="runc", created_at=10**18 + i, pod_name="", infra_name="",
        log_directory="", hostname="", shm_path=None, resolv_conf=None, hostname_file="", cgroup_parent="",
        cgroups_path="", conmon_cgroup="", netns_path=None, ips=[], infra_pid=0, conmon_pid=0, steps=(),
    )
    return SandboxView(state, ready)


def _pod_cache() -> ListCache[SandboxView]:
    return ListCache(conv.pod_sandbox, key=lambda v: (v.state.id, v.ready))


@given(st.lists(st.tuples(st.booleans(), st.dictionaries(st.text(max_size=5), st.text(max_size=70), max_size=3)), max_size=20))
def test_cached_bytes_equal_plain_encoding(pods: list[tuple[bool, dict[str, str]]]) -> None:
    views = [_view(i, ready, labels) for i, (ready, labels) in enumerate(pods)]
    cache = _pod_cache()
    for _ in range(2):  # second time from the cache
        got = bytes(whole(cri.ListPodSandboxResponse, cache.entries(views, full=True)))
        assert got == bytes(cri.ListPodSandboxResponse(items=[conv.pod_sandbox(v) for v in views]))
        assert cri.ListPodSandboxResponse().parse(got).items == [conv.pod_sandbox(v) for v in views]


def test_state_change_is_not_served_stale() -> None:
    cache = _pod_cache()
    cache.entries([_view(1, True, {})], full=True)
    got = cri.ListPodSandboxResponse().parse(bytes(whole(cri.ListPodSandboxResponse, cache.entries([_view(1, False, {})], full=True))))
    assert got.items[0].state == cri.PodSandboxState.SANDBOX_NOTREADY


def test_varint() -> None:
    assert [varint(n) for n in (0, 1, 127, 128, 300, 16384)] == [b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\x80\x80\x01"]


def test_image_list_encoding() -> None:
    from podrt.cri.image import image_message
    from podrt.images.manager import ImageView
    from podrt.images.store import ImageRecord

    views = {f"sha256:{i:064x}": ImageView(ImageRecord(f"sha256:{i:064x}", (f"docker.io/library/x:{i}",), (), "sha256:" + "0" * 64,
                                                        (), 100 * i), {"config": {"User": str(i)}}) for i in range(5)}
    cache: ListCache[ImageRecord] = ListCache(lambda r: image_message(views[r.id]), key=lambda r: r)
    records = [v.record for v in views.values()]
    for _ in range(2):
        got = bytes(whole(cri.ListImagesResponse, cache.entries(records, full=True)))
        assert got == bytes(cri.ListImagesResponse(images=[image_message(v) for v in views.values()]))


def test_full_list_forgets_gone_items() -> None:
    cache = _pod_cache()
    cache.entries([_view(1, True, {}), _view(2, True, {})], full=True)
    cache.entries([_view(1, True, {})], full=False)  # a filtered list keeps what it did not see
    assert len(cache._items) == 2
    cache.entries([_view(1, True, {})], full=True)
    assert list(cache._items) == [(f"{1:064x}", True)]


# ---- Stream* chunks ---------------------------------------------------------------

@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 120))
def test_chunk_bounds_cover_every_item_once_in_order_below_the_limit(sizes: list[int], limit: int) -> None:
    runs = list(chunk_bounds(sizes, limit))
    assert [i for start, end in runs for i in range(start, end)] == list(range(len(sizes)))
    for start, end in runs:
        assert end > start
        assert sum(sizes[start:end]) <= limit or end - start == 1  # only a lone item may be larger
    for start, end in runs[:-1]:  # greedy: the next item did not fit
        assert sum(sizes[start:end + 1]) > limit


def test_chunk_bounds_edges() -> None:
    assert list(chunk_bounds([], 10)) == []  # no items: no message
    assert list(chunk_bounds([5, 5, 5], 10)) == [(0, 2), (2, 3)]  # exactly the limit fits
    assert list(chunk_bounds([3, 30, 3], 10)) == [(0, 1), (1, 2), (2, 3)]  # a larger item goes alone
    assert list(chunk_bounds([1, 1, 1], 1)) == [(0, 1), (1, 2), (2, 3)]


@given(st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=200), max_size=4), max_size=30), st.integers(64, 4096))
def test_stream_chunks_join_to_the_list(labels: list[dict[str, str]], limit: int) -> None:
    views = [_view(i, i % 2 == 0, lab) for i, lab in enumerate(labels)]
    found = _pod_cache().entries(views, full=True)
    messages = list(chunked(cri.StreamPodSandboxesResponse, found, limit))
    codec = ProtoCodec()
    wire = [codec.encode(m, cri.StreamPodSandboxesResponse) for m in messages]  # what grpclib sends
    assert b"".join(wire) == bytes(cri.ListPodSandboxResponse(items=[conv.pod_sandbox(v) for v in views]))
    assert all(len(w) <= limit or len(cri.StreamPodSandboxesResponse().parse(w).pod_sandboxes) == 1 for w in wire)
    got = [p for w in wire for p in cri.StreamPodSandboxesResponse().parse(w).pod_sandboxes]
    assert got == [conv.pod_sandbox(v) for v in views]
    if views and all(len(e) <= limit for e in found):
        assert all(len(w) <= limit for w in wire) and len(wire) >= sum(map(len, found)) / limit


def test_uncached_entries_chunk_the_same_way() -> None:
    stats = [cri.ContainerStats(attributes=cri.ContainerAttributes(id=f"{i:064x}", labels={"k": "v" * i})) for i in range(50)]
    messages = list(chunked(cri.StreamContainerStatsResponse, entries(stats), 1000))
    assert len(messages) > 3
    got = [s for m in messages for s in cri.StreamContainerStatsResponse().parse(bytes(m)).container_stats]
    assert got == stats
    assert bytes(whole(cri.ListContainerStatsResponse, entries(stats))) == bytes(cri.ListContainerStatsResponse(stats=stats))
