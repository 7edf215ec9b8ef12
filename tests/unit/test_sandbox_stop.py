"""StopPodSandbox's undo of the pod's stop steps, with the steps faked: the
CNI DEL, the pins, the shm and the infra's stop run side by side, the netns
(which CNI DEL enters) and then the userns go after them, and a failing
undo does not keep the others from running but fails the stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import attrs
import pytest

from podrt.rollback import Step, StepRegistry
from podrt.sandbox.lifecycle import SandboxLifecycle
from podrt.state.records import PlanStep
from tests.unit.test_sandbox_run import Pods, make_sandbox

STOP_KINDS = ("userns", "shm", "netns", "spec", "cni", "podns")  # as made; spec is no stop step


class Recorded(Step[Any]):
    """An undo that logs its start and end, taking `delay` seconds."""

    def __init__(self, kind: str, log: list[str], delay: float, fail: bool) -> None:
        self.kind, self._log, self._delay, self._fail = kind, log, delay, fail

    async def do(self, ctx: Any, data: dict[str, Any]) -> None:
        raise AssertionError("not run")

    async def undo(self, data: dict[str, Any]) -> None:
        self._log.append(f"start {self.kind}")
        await asyncio.sleep(self._delay)
        self._log.append(f"end {self.kind}")
        if self._fail:
            raise OSError(f"{self.kind} is busy")


def lifecycle(tmp_path: Path, log: list[str], failing: str = "") -> SandboxLifecycle:
    pods = Pods(tmp_path)
    registry = StepRegistry()
    for kind in STOP_KINDS:
        delay = 0.05 if kind == "cni" else 0.0
        registry.register(kind, lambda kind=kind, delay=delay: Recorded(kind, log, delay, kind == failing))
    state = make_sandbox(pods.deps.root / "sandboxes", "pod0")
    state = attrs.evolve(state, steps=tuple(PlanStep(kind, kind, {}) for kind in STOP_KINDS))
    pods.table.add("pod0", state)
    pods.deps.ids.add("pod0")
    return SandboxLifecycle(pods.table, pods.statuses, pods.claims, registry=registry)


async def test_cni_del_runs_beside_the_other_stop_steps_and_the_namespaces_go_last(tmp_path: Path) -> None:
    log: list[str] = []
    await lifecycle(tmp_path, log).stop("pod0")
    assert set(log[:3]) == {"start shm", "start cni", "start podns"}
    assert log.index("end shm") < log.index("end cni") and log.index("end podns") < log.index("end cni")  # not after it
    assert log[-4:] == ["start netns", "end netns", "start userns", "end userns"]  # after CNI DEL, as made reversed
    assert "start spec" not in log  # RemovePodSandbox's


async def test_a_failed_undo_fails_the_stop_after_all_were_tried(tmp_path: Path) -> None:
    log: list[str] = []
    life = lifecycle(tmp_path, log, failing="cni")
    with pytest.raises(RuntimeError, match="stop of pod sandbox pod0 incomplete: cni: .*busy"):
        await life.stop("pod0")
    assert {"end shm", "end podns", "end netns", "end userns"} <= set(log)
    assert not life._table.get("pod0").stopped  # a retry runs them again
