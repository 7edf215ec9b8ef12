"""Cached list encodings are byte-for-byte what betterproto would send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from podrt.api.runtime import v1 as cri
from podrt.cri import sandbox_convert as conv
from podrt.cri.listcache import ListCache, _varint
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
    return ListCache(cri.ListPodSandboxResponse, conv.pod_sandbox, key=lambda v: (v.state.id, v.ready))


@given(st.lists(st.tuples(st.booleans(), st.dictionaries(st.text(max_size=5), st.text(max_size=70), max_size=3)), max_size=20))
def test_cached_bytes_equal_plain_encoding(pods: list[tuple[bool, dict[str, str]]]) -> None:
    views = [_view(i, ready, labels) for i, (ready, labels) in enumerate(pods)]
    cache = _pod_cache()
    for _ in range(2):  # second time from the cache
        got = bytes(cache.response(views, full=True))
        assert got == bytes(cri.ListPodSandboxResponse(items=[conv.pod_sandbox(v) for v in views]))
        assert cri.ListPodSandboxResponse().parse(got).items == [conv.pod_sandbox(v) for v in views]


def test_state_change_is_not_served_stale() -> None:
    cache = _pod_cache()
    cache.response([_view(1, True, {})], full=True)
    got = cri.ListPodSandboxResponse().parse(bytes(cache.response([_view(1, False, {})], full=True)))
    assert got.items[0].state == cri.PodSandboxState.SANDBOX_NOTREADY


def test_varint() -> None:
    assert [_varint(n) for n in (0, 1, 127, 128, 300, 16384)] == [b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\x80\x80\x01"]


def test_image_list_encoding() -> None:
    from podrt.cri.image import image_message
    from podrt.images.manager import ImageView
    from podrt.images.store import ImageRecord

    views = {f"sha256:{i:064x}": ImageView(ImageRecord(f"sha256:{i:064x}", (f"docker.io/library/x:{i}",), (), "sha256:" + "0" * 64,
                                                        (), 100 * i), {"config": {"User": str(i)}}) for i in range(5)}
    cache: ListCache[ImageRecord] = ListCache(cri.ListImagesResponse, lambda r: image_message(views[r.id]), key=lambda r: r)
    records = [v.record for v in views.values()]
    for _ in range(2):
        got = bytes(cache.response(records, full=True))
        assert got == bytes(cri.ListImagesResponse(images=[image_message(v) for v in views.values()]))
