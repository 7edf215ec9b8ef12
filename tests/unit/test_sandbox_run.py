"""RunPodSandbox's name logic, with the transaction faked: concurrent
requests for one pod name share one creation; a retry after success gets the
ready pod (and claims it); a pod that is not ready, or being expired, gives
its name up to a new one; a creation whose callers all left is kept for a
retry and claimed by it."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import attrs
import pytest

from podrt.aio.tasks import TaskOwner
from podrt.config import Config
from podrt.errors import DeadlineExceeded
from podrt.model.sandbox import NamespaceOptions, NsMode, SandboxConfig
from podrt.sandbox import naming
from podrt.sandbox.claims import Claims
from podrt.sandbox.run import SandboxRunner
from podrt.sandbox.status import SandboxStatuses
from podrt.state.format import SANDBOX_FORMAT
from podrt.state.idindex import IdIndex
from podrt.state.names import NameRegistry
from podrt.state.records import SandboxState
from podrt.state.store import StateStore
from podrt.steps.sandbox.context import SandboxDeps

POD = SandboxConfig(name="web", uid="u1", namespace="default")


def make_sandbox(directory: Path, sandbox_id: str, cfg: SandboxConfig = POD) -> SandboxState:
    (directory / sandbox_id).mkdir(parents=True, exist_ok=True)
    return SandboxState(id=sandbox_id, config=cfg, runtime_handler="runc", created_at=1, pod_name=naming.pod_name(cfg),
                        infra_name=naming.infra_name(cfg), log_directory="/tmp", hostname="web", shm_path=None,
                        resolv_conf=None, hostname_file="", cgroup_parent="", cgroups_path="", conmon_cgroup="",
                        netns_path=None, ips=[], infra_pid=0, conmon_pid=0, steps=())


class Pods:
    """A runner over fakes: `_create` reserves the name and waits for `gate`."""

    def __init__(self, tmp_path: Path, claim_timeout: float = 240.0) -> None:
        config = Config(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"))
        config = attrs.evolve(config, runtime=attrs.evolve(config.runtime, sandbox_claim_timeout=claim_timeout,
                                                           create_wait_timeout=0.2))
        self.deps = SandboxDeps(config=config, names=NameRegistry(), ids=IdIndex(), cni=None,  # type: ignore[arg-type]
                                find_network=lambda: types.SimpleNamespace(network=object(), message=""),
                                runtimes={}, pause_image=None, oom_score_adj=0, build_spec=None,  # type: ignore[arg-type]
                                idmap=None)  # type: ignore[arg-type]
        self.table = StateStore(self.deps.ids, "pod sandbox", self.deps.root / "sandboxes", SANDBOX_FORMAT)
        self.statuses = SandboxStatuses(self.deps, self.table)
        self.tasks = TaskOwner()
        self.claims = Claims(self.deps, self.table, self.tasks, remove=self.remove)
        self.runner = SandboxRunner(self.deps, self.table, self.statuses, self.claims, remove=self.remove,
                                    journal=None, faults=None, observer=None, tasks=self.tasks)  # type: ignore[arg-type]
        self.runner._create = self.create  # type: ignore[method-assign]
        self.gate = asyncio.Event()
        self.made: list[tuple[str, str | None]] = []  # (new ID, the stale pod it replaced)
        self.removed: list[str] = []

    async def create(self, cfg: SandboxConfig, name: str, stale: str | None) -> str:
        if stale is not None:
            await self.remove(stale)
        sandbox_id = f"pod{len(self.made)}"
        self.made.append((sandbox_id, stale))
        self.deps.names.reserve(name, sandbox_id)
        await self.gate.wait()
        self.table.add(sandbox_id, make_sandbox(self.deps.root / "sandboxes", sandbox_id, cfg))
        self.deps.ids.add(sandbox_id)
        self.statuses.set_alive(sandbox_id, True)
        return sandbox_id

    async def remove(self, sandbox_id: str) -> None:
        self.removed.append(sandbox_id)
        self.claims.disarm(sandbox_id)
        if (state := self.table.pop(sandbox_id)) is not None:
            self.deps.names.release(state.pod_name, sandbox_id)


async def test_concurrent_requests_for_one_name_share_one_creation(tmp_path: Path) -> None:
    pods = Pods(tmp_path)
    first = asyncio.create_task(pods.runner.run(POD))
    second = asyncio.create_task(pods.runner.run(POD))
    await asyncio.sleep(0.01)
    pods.gate.set()
    assert await first == await second == "pod0"
    assert pods.made == [("pod0", None)]
    assert not pods.table.get("pod0").unclaimed  # delivered: nobody needs to claim it


async def test_a_retry_after_success_gets_the_ready_pod_without_a_new_creation(tmp_path: Path) -> None:
    pods = Pods(tmp_path)
    pods.gate.set()
    assert await pods.runner.run(POD) == "pod0"
    assert await pods.runner.run(POD) == "pod0"
    assert pods.made == [("pod0", None)]


async def test_a_pod_that_is_not_ready_gives_its_name_to_a_new_one(tmp_path: Path) -> None:
    pods = Pods(tmp_path)
    pods.gate.set()
    await pods.runner.run(POD)
    pods.statuses.set_alive("pod0", False)  # its infra died
    assert await pods.runner.run(POD) == "pod1"
    assert pods.made == [("pod0", None), ("pod1", "pod0")]
    assert pods.removed == ["pod0"]


async def test_another_name_is_another_pod(tmp_path: Path) -> None:
    pods = Pods(tmp_path)
    pods.gate.set()
    assert await pods.runner.run(POD) == "pod0"
    assert await pods.runner.run(SandboxConfig(name="web", uid="u1", namespace="default", attempt=1)) == "pod1"


async def test_a_creation_whose_caller_left_is_kept_and_claimed_by_the_retry(tmp_path: Path) -> None:
    pods = Pods(tmp_path)
    with pytest.raises(DeadlineExceeded):
        await pods.runner.run(POD)  # create_wait_timeout passes; the creation goes on
    pods.gate.set()
    await asyncio.sleep(0.01)
    state = pods.table.get("pod0")
    assert state.unclaimed and SANDBOX_FORMAT.decode(pods.table.path("pod0").read_bytes()).unclaimed  # persisted, so a restart re-arms the timer
    assert "pod0" in pods.claims._timers
    assert await pods.runner.run(POD) == "pod0"
    assert not pods.table.get("pod0").unclaimed and "pod0" not in pods.claims._timers
    assert not SANDBOX_FORMAT.decode(pods.table.path("pod0").read_bytes()).unclaimed
    assert pods.made == [("pod0", None)]


async def test_an_unclaimed_pod_expires_and_a_later_retry_gets_a_new_one(tmp_path: Path) -> None:
    pods = Pods(tmp_path, claim_timeout=0.01)
    with pytest.raises(DeadlineExceeded):
        await pods.runner.run(POD)
    pods.gate.set()
    for _ in range(100):
        if pods.removed:
            break
        await asyncio.sleep(0.01)
    assert pods.removed == ["pod0"] and not pods.claims.expiring
    assert await pods.runner.run(POD) == "pod1"
    assert pods.made == [("pod0", None), ("pod1", None)]


async def test_a_pod_being_expired_is_not_handed_to_a_retry(tmp_path: Path) -> None:
    pods = Pods(tmp_path)
    pods.gate.set()
    await pods.runner.run(POD)
    pods.claims.expiring.add("pod0")
    assert await pods.runner.run(POD) == "pod1"
    assert pods.made[1] == ("pod1", "pod0")


@pytest.mark.parametrize(("namespaces", "drop", "expected"), [
    (NamespaceOptions(pid=NsMode.CONTAINER), True, "podns"),  # the kubelet's pod without shareProcessNamespace
    (NamespaceOptions(pid=NsMode.NODE), True, "podns"),
    (NamespaceOptions(pid=NsMode.POD), True, "infra"),  # its containers share the infra's PID namespace
    (NamespaceOptions(pid=NsMode.CONTAINER), False, "infra"),  # podrt.runtime.drop_infra_ctr = false
    (NamespaceOptions(pid=NsMode.CONTAINER, network=NsMode.NODE, ipc=NsMode.NODE), True, None),  # nothing of its own
], ids=["container", "node", "pod", "switch off", "host ipc and network"])
def test_which_pods_get_an_infra_process(tmp_path: Path, namespaces: NamespaceOptions, drop: bool, expected: str | None) -> None:
    pods = Pods(tmp_path)
    pods.deps.config = attrs.evolve(pods.deps.config, runtime=attrs.evolve(pods.deps.config.runtime, drop_infra_ctr=drop))
    plan = pods.runner._steps(attrs.evolve(POD, namespaces=namespaces))
    kinds = {step.kind for entry in plan for step in (entry if isinstance(entry, list) else [entry])}
    assert kinds & {"infra", "podns"} == ({expected} if expected else set())


def _phases(plan: list[Any]) -> list[set[str]]:
    return [{step.kind for step in (entry if isinstance(entry, list) else [entry])} for entry in plan]


@pytest.mark.parametrize("pid", [NsMode.CONTAINER, NsMode.POD], ids=["no infra", "infra"])
def test_cni_add_starts_early_beside_what_needs_no_network(tmp_path: Path, pid: NsMode) -> None:
    """One journal write for the host-side phase that makes the netns; CNI ADD
    runs right after it, beside the spec (no infra) or the infra start, which
    needs the spec written first."""
    pods = Pods(tmp_path)
    phases = _phases(pods.runner._steps(attrs.evolve(POD, namespaces=NamespaceOptions(pid=pid))))
    host_side = next(i for i, p in enumerate(phases) if "netns" in p)
    assert phases[host_side] >= {"rootfs", "shm", "files", "cgroup", "netns"}
    if pid == NsMode.CONTAINER:
        assert phases[host_side + 1] == {"spec", "cni", "podns"}
    else:
        assert phases[host_side + 1:host_side + 3] == [{"spec"}, {"cni", "infra"}]
    assert phases[-1] == {"state"}
