"""UpdatePodSandboxResources: the pod's limits into the pod's cgroup, and
into its record (PodSandboxStatus' verbose info; a restart keeps them).

The kubelet sends `resources` (its pod cgroup's limits less the overhead)
and `overhead` (the RuntimeClass' share) and sets the pod cgroup to their
sum itself, before or after (a resize grows the pod first and shrinks it
last). podrt writes the same sum there, so the pod is bounded by what the
kubelet asked whichever order the two writers came in. A limit `resources`
leaves at 0 is left as it is: an overhead adds to a limit, never makes one.

The pod's cgroup is its cgroup parent (the kubelet's `pod<uid>` directory,
or slice), which holds its infra, its containers and their conmons. A pod
in podrt's shared default parent has none of its own: limits for it are
refused, not written into a cgroup that bounds something else. A stopped
pod's request is recorded only (nothing of it runs), as containerd records
it whatever the pod's state; CRI-O and containerd refuse no pod for its state.
"""

from __future__ import annotations

import asyncio

import attrs

from podrt.aio import await_shielded
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.host import cgroups
from podrt.model.container import Resources
from podrt.state.records import SandboxState
from podrt.state.store import StateStore

MAX_INT64 = (1 << 63) - 1
MAX_SHARES = 262144
DEFAULT_PERIOD = 100_000  # µs: the kernel's CFS period, where the request names none
_NOT_ADDED = ("cpuset_cpus", "cpuset_mems", "unified", "oom_score_adj")  # no amounts an overhead could add to
_FIELDS = {"cpu_shares": "cpu_shares", "cpu_quota": "cpu_quota", "cpu_period": "cpu_period",
           "memory": "memory_limit_in_bytes", "memory_swap": "memory_swap_limit_in_bytes",
           "cpuset_cpus": "cpuset_cpus", "cpuset_mems": "cpuset_mems"}


_UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


def page_bytes(size: str) -> int:
    """"2MB" (the kubelet's form, checked by check_resources) in bytes."""
    return int(size[:-2]) * _UNITS[size[-2:]]


def _plus(value: int, extra: int) -> int:
    """A limit (0: leave it, -1: none) plus the overhead's part (-1: none)."""
    if value in (0, -1):
        return value
    return -1 if extra == -1 else min(value + extra, MAX_INT64)


def pod_limits(overhead: Resources, resources: Resources) -> cgroups.Limits:
    """The pod cgroup's limits, `resources` plus `overhead`; InvalidArgument
    naming the field for what a pod's cgroup cannot take as CRI put it."""
    for name in _NOT_ADDED:
        if getattr(overhead, name):
            raise InvalidArgument(f"overhead.{name}: an overhead is an amount added to the pod's limits, "
                                  f"and {name} is none (give it in resources)")
    if resources.oom_score_adj:
        raise InvalidArgument("resources.oom_score_adj: a score of processes, which a pod's cgroup has not; "
                              "give it per container")
    for part, r in (("overhead", overhead), ("resources", resources)):
        for n, h in enumerate(r.hugepage_limits):
            if h.limit % page_bytes(h.page_size):  # the kernel would round it down: 1 MiB of 1GB pages is none
                raise InvalidArgument(f"{part}.hugepage_limits[{n}].limit {h.limit} is not a multiple of its "
                                      f"page size {h.page_size}")
    quota_extra = overhead.cpu_quota
    if quota_extra > 0:  # in the pod's period
        quota_extra = quota_extra * (resources.cpu_period or DEFAULT_PERIOD) // (overhead.cpu_period or DEFAULT_PERIOD)
    swap_extra = overhead.memory_swap_limit or overhead.memory_limit  # memory+swap; 0 is "as memory" (no swap)
    extra_pages = {h.page_size: h.limit for h in overhead.hugepage_limits}
    return cgroups.Limits(
        cpu_shares=min(_plus(resources.cpu_shares, overhead.cpu_shares), MAX_SHARES),
        cpu_quota=_plus(resources.cpu_quota, quota_extra),
        cpu_period=resources.cpu_period,
        memory=_plus(resources.memory_limit, overhead.memory_limit),
        memory_swap=_plus(resources.memory_swap_limit, swap_extra),
        cpuset_cpus=resources.cpuset_cpus,
        cpuset_mems=resources.cpuset_mems,
        hugepages=tuple((h.page_size, _plus(h.limit, extra_pages.get(h.page_size, 0))) for h in resources.hugepage_limits),
        unified=dict(resources.unified),
    )


def field_of(limit: str, resources: Resources) -> str:
    """The request's field a Limits name stands for."""
    kind, _, key = limit.partition(".")
    if kind == "hugepages":
        n = next((i for i, h in enumerate(resources.hugepage_limits) if h.page_size == key), 0)
        return f"resources.hugepage_limits[{n}] ({key})"
    if kind == "unified":
        return f"resources.unified[{key!r}]"
    return f"resources.{_FIELDS.get(limit, limit)}"


def pod_cgroup(state: SandboxState) -> str:
    """The directory of the pod's own cgroup; FailedPrecondition when it has none."""
    if cgroups.shared_parent(state.cgroup_parent):
        raise FailedPrecondition(
            f"pod sandbox {state.id} has no cgroup of its own: it runs in podrt's shared cgroup parent "
            f"{state.cgroup_parent or '(default)'} (its RunPodSandbox named no linux.cgroup_parent), "
            f"so pod-level limits have nowhere to go")
    return cgroups.parent_dir(state.cgroup_parent)


class PodResources:
    def __init__(self, table: StateStore[SandboxState]) -> None:
        self._table = table

    async def update(self, id_prefix: str, overhead: Resources, resources: Resources) -> None:
        """Apply, then record: a refusal changes neither the cgroup nor the
        record, and a cancelled call finishes both first."""
        limits = pod_limits(overhead, resources)
        sandbox_id = self._table.resolve(id_prefix)
        async with self._table.lock(sandbox_id):
            state = self._table.get(sandbox_id)
            done = asyncio.ensure_future(self._apply(state, limits, overhead, resources))
            if await await_shielded(done):
                raise asyncio.CancelledError
            done.result()

    async def _apply(self, state: SandboxState, limits: cgroups.Limits, overhead: Resources, resources: Resources) -> None:
        if not state.stopped and not limits.empty():
            cgroup = pod_cgroup(state)
            try:
                await asyncio.to_thread(cgroups.apply_limits, cgroup, limits)
            except cgroups.LimitRefused as exc:
                error = InvalidArgument if exc.invalid else FailedPrecondition
                raise error(f"{field_of(exc.limit, resources)}: pod sandbox {state.id}'s cgroup {cgroup} "
                            f"cannot take it: {exc}") from None
        await self._table.update(state.id, lambda s: attrs.evolve(s, overhead=overhead, resources=resources))
