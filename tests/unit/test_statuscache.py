"""Status responses from cached encodings are byte for byte what betterproto
sends; a changed record or state is encoded again; removed items' entries go."""

from __future__ import annotations

import asyncio
import json

import attrs
from hypothesis import given
from hypothesis import strategies as st

from podrt.api.runtime import v1 as cri
from podrt.cri import sandbox_convert as conv
from podrt.cri import status_wire
from podrt.cri.statuscache import StatusCache, verbose_info
from podrt.sandbox.manager import SandboxView
from tests.unit.test_listcache import _view


def _key(view: SandboxView) -> tuple[str, object, object]:
    return view.state.id, view.state, view.ready


def _cache(known: set[str] | None = None) -> StatusCache[SandboxView]:
    return StatusCache(cri.PodSandboxStatusResponse, status_wire.pod_sandbox_status, _key,
                       known=(lambda i: True) if known is None else known.__contains__)


@given(st.booleans(), st.dictionaries(st.text(max_size=5), st.text(max_size=300), max_size=3),
       st.dictionaries(st.text(max_size=8), st.text(max_size=200), max_size=3))
def test_bytes_equal_plain_encoding(ready: bool, labels: dict[str, str], info: dict[str, str]) -> None:
    view = _view(7, ready, labels)
    cache = _cache()
    for _ in range(2):  # the second from the cache
        got = bytes(cache.response(view, info))
        assert got == bytes(cri.PodSandboxStatusResponse(status=conv.pod_sandbox_status(view), info=info))
        assert cri.PodSandboxStatusResponse().parse(got).info == info


def test_verbose_info_is_one_json_value() -> None:
    assert verbose_info(None) == {}
    assert verbose_info({"pid": 3}) == {"info": '{"pid": 3}'}


def test_a_changed_state_or_record_is_not_served_stale() -> None:
    cache = _cache()
    view = _view(1, True, {})
    cache.response(view, {})
    got = cri.PodSandboxStatusResponse().parse(bytes(cache.response(attrs.evolve(view, ready=False), {})))
    assert got.status.state == cri.PodSandboxState.SANDBOX_NOTREADY
    stopped = attrs.evolve(view, state=attrs.evolve(view.state, created_at=5))
    assert cri.PodSandboxStatusResponse().parse(bytes(cache.response(stopped, {}))).status.created_at == 5


def test_entries_of_removed_items_are_dropped() -> None:
    live: set[str] = set()
    cache = _cache(live)
    for i in range(500):
        view = _view(i, True, {})
        live.add(view.state.id)
        cache.response(view, {})
        if i >= 10:
            live.discard(_view(i - 10, True, {}).state.id)  # ten live at a time
    assert len(cache._items) <= 2 * 10 + 64 + 1


def test_verbose_info_is_read_once_per_record_and_state() -> None:
    """critest asks the verbose status at every step: the info (a spec file
    read, JSON) is made once while the record and state hold, and again when
    either changes; the bytes are betterproto's."""
    cache = _cache()
    asked: list[SandboxView] = []

    async def inspect(view: SandboxView) -> dict[str, object]:
        asked.append(view)
        return {"pid": len(asked), "ready": view.ready}

    async def status(view: SandboxView) -> cri.PodSandboxStatusResponse:
        return cri.PodSandboxStatusResponse().parse(bytes(await cache.verbose(view, inspect)))

    async def run() -> None:
        view = _view(3, True, {"a": "b"})
        for _ in range(3):
            got = await status(view)
            assert got == cri.PodSandboxStatusResponse(status=conv.pod_sandbox_status(view),
                                                       info=verbose_info({"pid": 1, "ready": True}))
        assert len(asked) == 1
        assert cri.PodSandboxStatusResponse().parse(bytes(cache.response(view, {}))).info == {}  # plain: no info
        not_ready = attrs.evolve(view, ready=False)
        assert (await status(not_ready)).info == verbose_info({"pid": 2, "ready": False})
        changed = attrs.evolve(view, state=attrs.evolve(view.state, created_at=9))
        got = await status(changed)
        assert got.info == verbose_info({"pid": 3, "ready": True}) and got.status.created_at == 9
        assert len(asked) == 3

    asyncio.run(run())



def test_a_verbose_status_from_memory_lets_no_other_work_run_first() -> None:
    """critest asks right after a create, whose work goes on on the loop: an
    info made without waiting (the spec in memory) answers in the same step;
    a failed inspect is the call's error; an item changed while its info was
    read gets that info in this answer only."""
    cache = _cache()

    async def inspect(view: SandboxView) -> dict[str, object]:
        return {"pid": 1}

    async def broken(view: SandboxView) -> dict[str, object]:
        raise OSError("gone")

    async def run() -> None:
        ran: list[int] = []
        asyncio.get_running_loop().call_soon(ran.append, 1)
        view = _view(5, True, {})
        got = cri.PodSandboxStatusResponse().parse(bytes(await cache.verbose(view, inspect)))
        assert ran == [] and got.info == verbose_info({"pid": 1}) and got.status.id == view.state.id
        try:
            await cache.verbose(_view(6, True, {}), broken)
        except OSError:
            pass
        else:
            raise AssertionError("the inspect's error was lost")
        changed = attrs.evolve(view, ready=False)

        async def slow(v: SandboxView) -> dict[str, object]:
            await asyncio.sleep(0)
            cache.response(changed, {})  # meanwhile, another call sees the change
            return {"pid": 2}

        fresh = _view(7, True, {})
        changed = attrs.evolve(fresh, ready=False)
        got = cri.PodSandboxStatusResponse().parse(bytes(await cache.verbose(fresh, slow)))
        assert got.info == verbose_info({"pid": 2}) and got.status.state == cri.PodSandboxState.SANDBOX_READY
        assert cache._items[fresh.state.id].info is None  # the changed item's entry holds no stale info

    asyncio.run(run())


def test_json_text_goes_into_the_info_as_it_is() -> None:
    spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"]}}
    info = verbose_info({"pid": 3, "runtimeSpec": json.dumps(spec, indent=1).encode(), "none": None})
    assert json.loads(info["info"]) == {"pid": 3, "runtimeSpec": spec, "none": None}
    assert verbose_info({"pid": 3, "ips": ["a"]})["info"] == json.dumps({"pid": 3, "ips": ["a"]})


def test_a_prepared_status_is_served_without_asking_again() -> None:
    """StartContainer prepares the status asked next (cri/containers.py): the
    next verbose call finds the status and info encoded, and asks nothing; a
    prepare whose inspect fails leaves the call to ask, and meet it."""
    cache = _cache()
    asked: list[SandboxView] = []

    async def inspect(view: SandboxView) -> dict[str, object]:
        asked.append(view)
        if view.state.created_at == 13:
            raise RuntimeError("gone")
        return {"pid": len(asked)}

    async def run() -> None:
        view = _view(4, True, {})
        cache.prepare(view, inspect)
        await asyncio.sleep(0)
        assert len(asked) == 1
        got = cri.PodSandboxStatusResponse().parse(bytes(await cache.verbose(view, inspect)))
        assert got.info == verbose_info({"pid": 1}) and len(asked) == 1
        failing = attrs.evolve(view, state=attrs.evolve(view.state, created_at=13))
        cache.prepare(failing, inspect)
        await asyncio.sleep(0)
        try:
            await cache.verbose(failing, inspect)
        except RuntimeError as exc:
            assert str(exc) == "gone" and len(asked) == 3
        else:
            raise AssertionError("the call met no failure")

    asyncio.run(run())
