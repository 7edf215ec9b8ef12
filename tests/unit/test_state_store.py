"""The typed state store: its one format (and the old one it still reads),
atomic updates under a lock, reads that never write.

tests/unit/state_v1/ holds state files as podrt wrote them before the store
(commit ce5235e, a real daemon: a ready pod with DNS and a port mapping, a
container that exited with 3, one only created): the format a daemon
upgraded in place finds on disk."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from podrt.errors import NotFound
from podrt.model.container import ContainerConfig, ContainerUser, HugepageLimit, Mount, Propagation, Resources
from podrt.model.sandbox import DnsConfig, NamespaceOptions, NsMode, PortMapping, SandboxConfig
from podrt.state import store as store_module
from podrt.state.format import CONTAINER_FORMAT, FORMAT_VERSION, SANDBOX_FORMAT
from podrt.state.idindex import IdIndex
from podrt.state.records import ContainerState, PlanStep, SandboxState
from podrt.state.store import STATE_FILE, StateStore

V1 = Path(__file__).parent / "state_v1"
POD_ID = "b14d3170949b93da41c8e2e8f074d0f033d9e849fe25cdb5ae28506aba2c8b47"
EXITED_ID = "6227a99ddec762970460825961ce6145584646c4c194e2a1ef4864218456a699"
CREATED_ID = "dffea5ebae6212f4eb91249ad774301d3c1a4fe61e9a5404dd731b8e78b86561"


def _sandbox(sandbox_id: str = "a" * 64, **fields: object) -> SandboxState:
    cfg = SandboxConfig(name="p", uid="u", namespace="ns", dns=DnsConfig(servers=("10.0.0.10",)),
                        port_mappings=(PortMapping("tcp", 80, 8080),), labels={"k": "v"},
                        namespaces=NamespaceOptions(pid=NsMode.NODE))
    state = SandboxState(
        id=sandbox_id, config=cfg, runtime_handler="runc", created_at=1, pod_name="k8s_p", infra_name="k8s_POD_p",
        log_directory="/logs", hostname="p", shm_path=None, resolv_conf="/r", hostname_file="/h", cgroup_parent="/podrt",
        cgroups_path="/podrt/x", conmon_cgroup="/podrt/c", netns_path="/run/netns/x", ips=["10.1.0.2"], infra_pid=10,
        conmon_pid=9, steps=(PlanStep("names", "names", {"id": sandbox_id, "names": ["k8s_p"]}),
                             PlanStep("storage", "storage", {"dirs": ["/d"]})))
    return attrs.evolve(state, **fields)


def _container(container_id: str = "c" * 64, **fields: object) -> ContainerState:
    cfg = ContainerConfig(name="c", command=("/bin/sh",), envs=(("A", "1"),),
                          mounts=(Mount("/in", "/out", propagation=Propagation.PRIVATE),))
    state = ContainerState(
        id=container_id, sandbox_id="a" * 64, name="k8s_c", config=cfg, image_id="sha256:1", image_ref="busybox",
        runtime_handler="runc", log_path="/logs/c.log", stop_signal="SIGTERM", created_at=5,
        steps=(PlanStep("names", "ctr-names", {"id": container_id, "names": ["k8s_c"]}),), pid=7,
        user=ContainerUser(0, 0, (1, 2)))
    return attrs.evolve(state, **fields)


def _store(tmp_path: Path, *records: SandboxState) -> StateStore[SandboxState]:
    store = StateStore(IdIndex(), "pod sandbox", tmp_path / "sandboxes", SANDBOX_FORMAT)
    for record in records:
        store.path(record.id).parent.mkdir(parents=True)
        store_module.write_record(store.path(record.id), SANDBOX_FORMAT, record)
        store.ids.add(record.id)
        store.add(record.id, record)
    return store


# ---- the format -----------------------------------------------------------------------


def test_records_round_trip() -> None:
    pod = _sandbox(stopped=True, unclaimed=True)
    assert SANDBOX_FORMAT.decode(SANDBOX_FORMAT.encode(pod)) == pod
    exited = _container(exit_code=3, finished_at=9, reason="Error")
    assert CONTAINER_FORMAT.decode(CONTAINER_FORMAT.encode(exited)) == attrs.evolve(exited, saved_exit=True)
    running = _container(started_at=6)
    assert CONTAINER_FORMAT.decode(CONTAINER_FORMAT.encode(running)) == running


def test_a_pods_updated_resources_round_trip_and_older_records_have_none() -> None:
    """UpdatePodSandboxResources' request is kept; a version 2 record written
    before it existed (no such keys) reads as none sent."""
    updated = _sandbox(overhead=Resources(cpu_shares=102, memory_limit=64 << 20),
                       resources=Resources(cpu_quota=50000, cpu_period=100000, cpuset_cpus="0",
                                           hugepage_limits=(HugepageLimit("2MB", 4 << 20),), unified={"memory.high": "max"}))
    assert SANDBOX_FORMAT.decode(SANDBOX_FORMAT.encode(updated)) == updated
    doc = json.loads(SANDBOX_FORMAT.encode(_sandbox()))
    del doc["overhead"], doc["resources"]
    older = SANDBOX_FORMAT.decode(json.dumps(doc).encode())
    assert older == _sandbox() and older.resources is None and older.overhead is None


def test_the_file_says_its_version_and_kind_and_not_what_is_in_memory_only() -> None:
    doc = json.loads(CONTAINER_FORMAT.encode(_container(lost=True, saved_exit=True)))
    assert (doc["version"], doc["kind"]) == (FORMAT_VERSION, "container") and FORMAT_VERSION == 2
    assert "lost" not in doc and "saved_exit" not in doc
    assert doc["steps"] == [{"kind": "names", "name": "ctr-names", "data": {"id": "c" * 64, "names": ["k8s_c"]}}]
    assert json.loads(SANDBOX_FORMAT.encode(_sandbox()))["kind"] == "sandbox"


@pytest.mark.parametrize("doc", [{"version": 3}, {"kind": "sandbox"}, {"version": "2", "kind": "sandbox"}, []])
def test_an_unknown_version_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        SANDBOX_FORMAT.decode(json.dumps(doc).encode())


def test_a_record_of_the_other_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="'container' record"):
        SANDBOX_FORMAT.decode(CONTAINER_FORMAT.encode(_container()))


def test_the_previous_podrts_sandbox_file_is_read() -> None:
    pod = SANDBOX_FORMAT.decode((V1 / "sandbox.json").read_bytes())
    assert pod.id == POD_ID and pod.hostname == "h1" and pod.ips == ["10.233.64.2"] and pod.infra_pid == 12037
    assert pod.config.dns == DnsConfig(servers=("10.0.0.10",), searches=("svc.local",), options=("ndots:5",))
    assert pod.config.port_mappings == (PortMapping("tcp", 80, 0),) and pod.config.labels == {"app": "web"}
    assert not pod.stopped and not pod.unclaimed
    old = json.loads((V1 / "sandbox.json").read_bytes())["records"]
    assert [(s.name, s.kind, s.data) for s in pod.steps] == [tuple(r) for r in old]
    assert [s.kind for s in pod.steps][:4] == ["names", "id", "storage", "rootfs"]
    # written again, it is the new format, and the same record
    assert json.loads(SANDBOX_FORMAT.encode(pod))["version"] == FORMAT_VERSION
    assert SANDBOX_FORMAT.decode(SANDBOX_FORMAT.encode(pod)) == pod


def test_the_previous_podrts_container_files_are_read() -> None:
    exited = CONTAINER_FORMAT.decode((V1 / "container-exited.json").read_bytes())
    assert (exited.id, exited.sandbox_id, exited.exit_code, exited.reason) == (EXITED_ID, POD_ID, 3, "Error")
    assert exited.saved_exit and not exited.lost and exited.started_at and exited.finished_at
    assert exited.config.envs == (("A", "1"),) and exited.config.command == ("/bin/sh", "-c", "exit 3")
    assert exited.user == ContainerUser(0, 0, ()) and exited.stop_signal == "SIGINT"
    assert exited.steps[0] == PlanStep("names", "ctr-names", {"id": EXITED_ID, "names": [exited.name]})
    assert [s.kind for s in exited.steps] == ["names", "id", "ctr-storage", "rootfs", "ctr-volumes", "ctr-spec", "ctr-create"]
    created = CONTAINER_FORMAT.decode((V1 / "container-created.json").read_bytes())
    assert created.exit_code is None and not created.saved_exit and created.started_at == 0 and created.pid == 12087


def test_the_store_reads_the_previous_podrts_state_and_writes_it_anew(tmp_path: Path) -> None:
    store = StateStore(IdIndex(), "pod sandbox", tmp_path / "sandboxes", SANDBOX_FORMAT)
    store.path(POD_ID).parent.mkdir(parents=True)
    shutil.copy(V1 / "sandbox.json", store.path(POD_ID))
    (tmp_path / "sandboxes" / "broken").mkdir()
    (tmp_path / "sandboxes" / "broken" / STATE_FILE).write_text("{")
    found, bad = store.read_all()
    assert [r.id for r in found] == [POD_ID] and [p.parent.name for p, _ in bad] == ["broken"]
    store.add(POD_ID, found[0])
    asyncio.run(store.update(POD_ID, lambda r: attrs.evolve(r, stopped=True)))
    doc = json.loads(store.path(POD_ID).read_bytes())
    assert doc["version"] == FORMAT_VERSION and doc["stopped"] is True and "records" not in doc
    assert store.read_all()[0] == [attrs.evolve(found[0], stopped=True)]


# ---- the store -------------------------------------------------------------------------


def test_lookups(tmp_path: Path) -> None:
    store = _store(tmp_path, _sandbox("ab" + "0" * 62), _sandbox("ac" + "0" * 62))
    assert store.resolve("ab") == "ab" + "0" * 62 and len(store) == 2 and "ac" + "0" * 62 in store
    assert [r.id for r in store.values()] == list(store) == ["ab" + "0" * 62, "ac" + "0" * 62]
    with pytest.raises(NotFound, match="pod sandbox x not found"):
        store.get("x")
    assert store.find("x") is None
    store.ids.remove("ab" + "0" * 62)
    store.pop("ab" + "0" * 62)
    with pytest.raises(NotFound):
        store.resolve("ab")
    assert list(store) == ["ac" + "0" * 62]


async def test_concurrent_updates_of_one_record_lose_none(tmp_path: Path) -> None:
    """Each update reads the record, waits for its write in a thread, and
    swaps: without the lock, most increments would be lost."""
    store = _store(tmp_path, _sandbox(infra_pid=0))
    sid = "a" * 64
    await asyncio.gather(*(store.update(sid, lambda r: attrs.evolve(r, infra_pid=r.infra_pid + 1)) for _ in range(40)))
    assert store.get(sid).infra_pid == 40
    assert SANDBOX_FORMAT.decode(store.path(sid).read_bytes()).infra_pid == 40


async def test_an_inline_update_during_a_write_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """update_now (a done callback's) lands while an update's file is being
    written: the update is made again from the record update_now left."""
    store = _store(tmp_path, _sandbox())
    sid = "a" * 64
    writing, go_on = threading.Event(), threading.Event()
    write = store_module.write_record

    def slow_first_write(path: Path, fmt: Any, record: Any) -> None:
        if not writing.is_set():
            writing.set()
            go_on.wait(5)
        write(path, fmt, record)

    monkeypatch.setattr(store_module, "write_record", slow_first_write)
    pending = asyncio.ensure_future(store.update(sid, lambda r: attrs.evolve(r, stopped=True)))
    while not writing.is_set():
        await asyncio.sleep(0.001)
    store.update_now(sid, lambda r: attrs.evolve(r, unclaimed=True))
    go_on.set()
    await pending
    assert (store.get(sid).stopped, store.get(sid).unclaimed) == (True, True)
    on_disk = SANDBOX_FORMAT.decode(store.path(sid).read_bytes())
    assert (on_disk.stopped, on_disk.unclaimed) == (True, True)


async def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path, _sandbox())
    sid = "a" * 64
    before = store.get(sid)
    shutil.rmtree(store.path(sid).parent)
    with pytest.raises(FileNotFoundError):
        await store.update(sid, lambda r: attrs.evolve(r, stopped=True))
    assert store.get(sid) is before


async def test_a_cancelled_update_still_lands_whole(tmp_path: Path) -> None:
    store = _store(tmp_path, _sandbox())
    sid = "a" * 64
    task = asyncio.ensure_future(store.update(sid, lambda r: attrs.evolve(r, stopped=True)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get(sid).stopped and SANDBOX_FORMAT.decode(store.path(sid).read_bytes()).stopped


async def test_an_in_memory_update_does_not_write(tmp_path: Path) -> None:
    store = StateStore(IdIndex(), "container", tmp_path / "containers", CONTAINER_FORMAT)
    record = _container()
    store.path(record.id).parent.mkdir(parents=True)
    store_module.write_record(store.path(record.id), CONTAINER_FORMAT, record)
    store.add(record.id, record)
    before = store.path(record.id).read_bytes(), os.stat(store.path(record.id)).st_mtime_ns
    await store.update(record.id, lambda r: attrs.evolve(r, lost=True), durable=False)
    assert store.get(record.id).lost
    assert (store.path(record.id).read_bytes(), os.stat(store.path(record.id)).st_mtime_ns) == before


def test_reads_never_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path, _sandbox())
    writes: list[Path] = []
    monkeypatch.setattr(store_module, "atomic_write", lambda path, _data: writes.append(path))
    record = store.get("a" * 64)
    store.find("a" * 64), store.values(), store.read_all(), store.resolve("a"), list(store)
    assert writes == []
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.stopped = True  # type: ignore[misc]
    assert store.get("a" * 64) == _sandbox()
