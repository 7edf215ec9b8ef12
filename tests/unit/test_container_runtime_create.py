"""The runc creates run after CreateContainer answered, with runc faked: a
create that succeeds gives the container its pids (in memory: saved with the
start); one runc refuses leaves it EXITED (StartError, 128, runc's words,
saved) and StartContainer's refusal says them; a cancelled one (a removal,
the shutdown) leaves it as it was; whoever settles waits, and a cancelled
waiter does not cut the create."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from podrt.aio.tasks import TaskOwner
from podrt.container.events import EventType
from podrt.container.runtime_create import RuntimeCreates, start_refusal
from podrt.errors import FailedPrecondition
from podrt.oci.runtime import ContainerProcess, OciRuntimeError, RuntimeRefused
from podrt.state.format import CONTAINER_FORMAT
from podrt.state.store import StateStore
from tests.unit.test_container_status import make_deps, make_state, make_store


class FakeRuntime:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.error: Exception | None = None
        self.cancelled = False

    async def create(self, container_id: str, *_args: Any, **_kw: Any) -> ContainerProcess:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return ContainerProcess(pid=4242, conmon_pid=42)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.deps = make_deps(tmp_path)
        self.runc = FakeRuntime()
        self.deps.runtimes["runc"] = self.runc  # type: ignore[assignment]
        self.table: StateStore[Any] = make_store(self.deps)
        self.published: list[tuple[str, EventType]] = []
        events: Any = type("Events", (), {"publish": lambda _s, cid, _pod, kind: self.published.append((cid, kind))})()
        self.creates = RuntimeCreates(self.deps, self.table, events, TaskOwner())
        state = make_state(self.deps, "c1")
        saved = self.deps.container_dir("c1")  # as the creation left them, for make_durable's fsyncs
        (saved / "state.json").write_bytes(CONTAINER_FORMAT.encode(state))
        (saved / "config.json").write_text("{}")
        self.table.add("c1", state)
        self.creates.begin(state)


async def test_a_create_gives_the_container_its_pids_in_memory(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    waiter = asyncio.create_task(h.creates.settled("c1"))
    await asyncio.sleep(0.01)
    assert not waiter.done() and h.creates.running("c1")
    h.runc.gate.set()
    await waiter
    state = h.table.get("c1")
    assert (state.pid, state.conmon_pid) == (4242, 42)
    assert CONTAINER_FORMAT.decode(h.table.path("c1").read_bytes()).pid == 0  # not written: saved with the start
    assert not h.creates.running("c1") and start_refusal(state) is None and h.published == []


@pytest.mark.parametrize("error, said", [
    (RuntimeRefused('exec: "nosuch": executable file not found in $PATH'), "the OCI runtime refused the container"),
    (OciRuntimeError("conmon exited with status 1"), "the OCI runtime could not create the container: conmon"),
    (OSError(28, "No space left on device"), "could not create the container: [Errno 28] No space left"),
])
async def test_a_failed_create_leaves_the_container_exited_with_the_runtimes_words(
        tmp_path: Path, error: Exception, said: str) -> None:
    h = Harness(tmp_path)
    h.runc.error = error
    h.runc.gate.set()
    await h.creates.settled("c1")
    state = h.table.get("c1")
    assert (state.exit_code, state.reason, state.saved_exit) == (128, "StartError", True)
    assert said in state.message and json.loads(h.table.path("c1").read_bytes())["reason"] == "StartError"
    assert h.published == [("c1", EventType.STOPPED)]
    refused = start_refusal(state)
    assert isinstance(refused, FailedPrecondition) and said in str(refused) and "c1" in str(refused)


async def test_a_cancelled_waiter_does_not_cut_the_create_but_a_cancel_does(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    waiter = asyncio.create_task(h.creates.settled("c1"))
    await asyncio.sleep(0.01)
    waiter.cancel()  # a client's deadline
    await asyncio.sleep(0.01)
    assert h.creates.running("c1") and not h.runc.cancelled
    await h.creates.cancel("c1")  # a removal
    assert h.runc.cancelled and not h.creates.running("c1")
    state = h.table.get("c1")
    assert state.pid == 0 and state.exit_code is None and h.published == []  # the removal's teardown follows
