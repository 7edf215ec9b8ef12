"""UpdatePodSandboxResources' host-free parts: the pod's limits as the sum of
`resources` and `overhead` (what the kubelet writes to the pod cgroup), the
refusals that name the field, and the cgroup files each limit becomes, on
fake trees laid out as the kernel lays them out (v1 and v2). The kernel's own
files are written by tests/integration/test_pod_resources.py."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from podrt.errors import InvalidArgument
from podrt.host.cgroups import limits
from podrt.host.cgroups.limits import LimitRefused, Limits
from podrt.model.container import HugepageLimit, Resources
from podrt.sandbox.resources import field_of, pod_limits

MiB = 1 << 20


def test_the_pods_limits_are_resources_plus_overhead() -> None:
    resources = Resources(cpu_shares=512, cpu_quota=50000, cpu_period=100000, memory_limit=256 * MiB,
                          cpuset_cpus="0-1", hugepage_limits=(HugepageLimit("2MB", 8 * MiB),), unified={"memory.high": "max"})
    overhead = Resources(cpu_shares=102, cpu_quota=10000, cpu_period=100000, memory_limit=64 * MiB,
                         hugepage_limits=(HugepageLimit("2MB", 2 * MiB), HugepageLimit("1GB", 1 << 30)))
    assert pod_limits(overhead, resources) == Limits(
        cpu_shares=614, cpu_quota=60000, cpu_period=100000, memory=320 * MiB, cpuset_cpus="0-1",
        hugepages=(("2MB", 10 * MiB),), unified={"memory.high": "max"})


def test_an_overhead_adds_to_a_limit_but_never_makes_one() -> None:
    """0 in resources leaves the limit as it is; -1 (none) stays none; the
    overhead's quota is taken into the pod's period; swap counts memory+swap."""
    overhead = Resources(cpu_shares=100, cpu_quota=5000, cpu_period=50000, memory_limit=16 * MiB)
    assert pod_limits(overhead, Resources()).empty()
    assert pod_limits(overhead, Resources(cpu_quota=-1)) == Limits(cpu_quota=-1)
    assert pod_limits(overhead, Resources(cpu_quota=20000, cpu_period=200000)) == Limits(cpu_quota=40000, cpu_period=200000)
    swapped = pod_limits(overhead, Resources(memory_limit=64 * MiB, memory_swap_limit=128 * MiB))
    assert (swapped.memory, swapped.memory_swap) == (80 * MiB, 144 * MiB)
    assert pod_limits(Resources(), Resources(cpu_shares=262144)).cpu_shares == 262144
    assert pod_limits(overhead, Resources(cpu_shares=262144)).cpu_shares == 262144  # capped at the kernel's most


@pytest.mark.parametrize("overhead, resources, fragment", [
    (Resources(cpuset_cpus="0"), Resources(), "overhead.cpuset_cpus"),
    (Resources(unified={"memory.high": "1"}), Resources(), "overhead.unified"),
    (Resources(oom_score_adj=5), Resources(), "overhead.oom_score_adj"),
    (Resources(), Resources(oom_score_adj=-100), "resources.oom_score_adj"),
    (Resources(), Resources(hugepage_limits=(HugepageLimit("1GB", 4 * MiB),)), r"resources.hugepage_limits\[0\].limit .* page size 1GB"),
    (Resources(hugepage_limits=(HugepageLimit("2MB", MiB),)), Resources(), r"overhead.hugepage_limits\[0\].limit"),
])
def test_what_a_pods_cgroup_cannot_take_is_refused_by_field(overhead: Resources, resources: Resources, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        pod_limits(overhead, resources)


def test_a_refused_limit_names_the_requests_field() -> None:
    r = Resources(hugepage_limits=(HugepageLimit("1GB", 1), HugepageLimit("2MB", 2)))
    assert field_of("hugepages.2MB", r) == "resources.hugepage_limits[1] (2MB)"
    assert field_of("unified.memory.high", r) == "resources.unified['memory.high']"
    assert field_of("memory_swap", r) == "resources.memory_swap_limit_in_bytes"


# ---- the files, on fake trees ------------------------------------------------------------

V2_POD = {"cgroup.controllers": "cpu memory", "cpu.weight": "100", "cpu.max": "max 100000", "memory.max": "max",
          "memory.current": str(20 * MiB), "memory.swap.max": "max", "cpuset.cpus": "", "cpuset.mems": ""}


def _tree(root: Path, rel: str, files: dict[str, str]) -> Path:
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text + "\n")
    return d


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.controllers").write_text("cpu memory cpuset\n")
    return _tree(tmp_path, "kubepods/pod1", V2_POD)


def test_v2_files_take_runcs_forms(v2: Path) -> None:
    root = v2.parents[1]
    limits.apply("/kubepods/pod1", Limits(cpu_shares=1024, cpu_quota=50000, cpu_period=100000, memory=64 * MiB,
                                          memory_swap=96 * MiB, cpuset_cpus="0"), root)
    files = {n: (v2 / n).read_text().strip() for n in ("cpu.weight", "cpu.max", "memory.max", "memory.swap.max", "cpuset.cpus")}
    assert files == {"cpu.weight": "39", "cpu.max": "50000 100000", "memory.max": str(64 * MiB),
                     "memory.swap.max": str(32 * MiB), "cpuset.cpus": "0"}
    limits.apply("/kubepods/pod1", Limits(cpu_period=200000), root)  # a period alone keeps the quota
    assert (v2 / "cpu.max").read_text() == "50000 200000"
    limits.apply("/kubepods/pod1", Limits(cpu_quota=-1), root)
    assert (v2 / "cpu.max").read_text() == "max"


def test_a_missing_file_is_refused_before_anything_is_written(v2: Path) -> None:
    root = v2.parents[1]
    with pytest.raises(LimitRefused, match="hugetlb controller is not enabled") as err:
        limits.apply("/kubepods/pod1", Limits(cpu_shares=2, hugepages=(("2MB", 2 * MiB),)), root)
    assert err.value.limit == "hugepages.2MB" and not err.value.invalid
    assert (v2 / "cpu.weight").read_text().strip() == "100"
    with pytest.raises(LimitRefused, match="the cgroup is gone"):
        limits.apply("/kubepods/gone", Limits(memory=64 * MiB), root)


def test_memory_below_use_is_refused_and_nothing_changes(v2: Path) -> None:
    root = v2.parents[1]
    with pytest.raises(LimitRefused, match="below what the cgroup uses now") as err:
        limits.apply("/kubepods/pod1", Limits(cpu_shares=2, memory=16 * MiB), root)
    assert err.value.limit == "memory"
    assert (v2 / "memory.max").read_text().strip() == "max" and (v2 / "cpu.weight").read_text().strip() == "100"


def test_a_limit_the_cgroup_has_already_is_not_refused_for_use_above_it(v2: Path) -> None:
    """The kubelet lowers the pod's memory.max before it calls; the same value again is no lowering."""
    root = v2.parents[1]
    (v2 / "memory.max").write_text(str(16 * MiB))
    limits.apply("/kubepods/pod1", Limits(memory=16 * MiB), root)
    assert (v2 / "memory.max").read_text() == str(16 * MiB)


def test_a_write_the_kernel_refuses_puts_back_what_was_written(v2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = v2.parents[1]
    write = Path.write_text

    def kernel(path: Path, text: str) -> int:
        if path.name == "memory.max":
            raise OSError(errno.EINVAL, "Invalid argument")
        return write(path, text)

    monkeypatch.setattr(Path, "write_text", kernel)
    with pytest.raises(LimitRefused, match="the kernel refused") as err:
        limits.apply("/kubepods/pod1", Limits(cpu_shares=2, memory=64 * MiB), root)
    assert err.value.limit == "memory" and err.value.invalid
    assert (v2 / "cpu.weight").read_text().strip() == "100"


def test_v1_memory_and_memsw_go_in_the_order_that_keeps_memsw_above(tmp_path: Path) -> None:
    memory = _tree(tmp_path, "memory/kubepods/pod1", {"memory.limit_in_bytes": str(64 * MiB), "memory.usage_in_bytes": str(MiB),
                                                       "memory.memsw.limit_in_bytes": str(64 * MiB)})
    _tree(tmp_path, "cpu/kubepods/pod1", {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"})
    grow = limits.plan("/kubepods/pod1", Limits(memory=128 * MiB), tmp_path)
    assert [(n, v) for n, _, v in grow] == [("memory_swap", str(128 * MiB)), ("memory", str(128 * MiB))]
    shrink = limits.plan("/kubepods/pod1", Limits(memory=32 * MiB, memory_swap=32 * MiB), tmp_path)
    assert [n for n, _, _ in shrink] == ["memory", "memory_swap"]
    limits.apply("/kubepods/pod1", Limits(cpu_shares=512, cpu_quota=-1, memory_swap=-1, memory=96 * MiB), tmp_path)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == "-1"
    with pytest.raises(LimitRefused, match="cgroup v2 files"):
        limits.plan("/kubepods/pod1", Limits(unified={"memory.high": "1"}), tmp_path)
    with pytest.raises(LimitRefused, match="mounts no hugetlb controller"):  # as on these hosts
        limits.plan("/kubepods/pod1", Limits(hugepages=(("2MB", MiB),)), tmp_path)
