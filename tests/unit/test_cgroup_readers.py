"""The cgroup layer on fake trees laid out as the kernel lays them out: the v2
reader (podrt's own), the v1 reader (cgroupspy plus direct files), hierarchy
detection, the pod's total, and removal children first. The real kernel's
files are read by tests/integration/test_cgroups.py on both hierarchies."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from podrt.host import cgroups
from podrt.host.cgroups import hierarchy, v2
from podrt.host.cgroups.usage import DeviceIo, PressureLine, Usage

V2_FILES = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids\n",
    "cpu.stat": "usage_usec 2500\nuser_usec 1500\nsystem_usec 1000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 900\n",
    "memory.current": "10485760\n",
    "memory.peak": "20971520\n",
    "memory.max": "67108864\n",
    "memory.stat": "anon 4096000\nfile 6000000\nfile_mapped 3000\nkernel 1000\ninactive_file 2000000\nactive_file 4000000\npgfault 321\npgmajfault 5\n",
    "memory.events": "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
    "memory.swap.current": "8192\n",
    "memory.swap.max": "0\n",
    "pids.current": "3\n",
    "pids.max": "100\n",
    "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    "hugetlb.2MB.current": "2097152\n",
    "hugetlb.2MB.rsvd.current": "4194304\n",  # reservations (5.7+): not the usage
    "hugetlb.1GB.current": "0\n",
    "cpu.pressure": "some avg10=1.50 avg60=0.25 avg300=0.05 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
}


def _tree(base: Path, files: dict[str, str]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)


def test_v2_reader_reads_every_counter(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    _tree(tmp_path / "podrt" / "podrt-abc", V2_FILES)
    u = cgroups.read_usage("/podrt/podrt-abc", root=tmp_path)
    assert u is not None
    assert (u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns) == (2_500_000, 1_500_000, 1_000_000)
    assert (u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_ns) == (40, 7, 900_000)
    assert (u.memory_bytes, u.working_set_bytes, u.rss_bytes, u.cache_bytes) == (10485760, 10485760 - 2000000, 4096000, 6000000)
    assert (u.page_faults, u.major_page_faults, u.limit_bytes) == (321, 5, 64 << 20)
    assert (u.limit_hits, u.oom_events, u.oom_kills) == (12, 2, 1)
    assert (u.swap_bytes, u.swap_limit_bytes, u.processes) == (8192, 0, 3)
    assert (u.io_read_bytes, u.io_write_bytes, u.io_reads, u.io_writes) == (4196, 8192, 2, 2)
    assert u.io_devices == (DeviceIo(8, 0, 4096, 8192, 1, 2), DeviceIo(253, 1, 100, 0, 1, 0))
    assert (u.memory_max_bytes, u.mapped_file_bytes, u.processes_limit) == (20 << 20, 3000, 100)
    assert u.hugetlb_bytes == (("1GB", 0), ("2MB", 2 << 20))
    assert u.cpu_pressure is not None and u.cpu_pressure.some == PressureLine(1.5, 0.25, 0.05, 12345)
    assert u.cpu_pressure.full.total_us == 99 and u.io_pressure is None  # no io.pressure file: no PSI for io
    assert cgroups.oom_killed("/podrt/podrt-abc", root=tmp_path)


def test_v2_reader_without_controllers_limits_or_the_cgroup(tmp_path: Path) -> None:
    """Only cpu.stat's core lines exist when no controller is enabled below the
    parent; "max" is no limit; a cgroup that is gone reads as None."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    _tree(tmp_path / "bare", {"cpu.stat": "usage_usec 10\nuser_usec 6\nsystem_usec 4\n"})
    u = cgroups.read_usage("/bare", root=tmp_path)
    assert u == Usage(cpu_ns=10_000, cpu_user_ns=6_000, cpu_system_ns=4_000)
    assert u is not None and u.swap_bytes is None and u.limit_bytes is None
    _tree(tmp_path / "free", {**V2_FILES, "memory.max": "max\n", "memory.swap.max": "max\n"})
    free = cgroups.read_usage("/free", root=tmp_path)
    assert free is not None and (free.limit_bytes, free.swap_limit_bytes, free.swap_bytes) == (None, None, 8192)
    assert cgroups.read_usage("/gone", root=tmp_path) is None
    assert not cgroups.oom_killed("/gone", root=tmp_path)


def test_v2_reader_reads_a_systemd_scope(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    _tree(tmp_path / "kubepods.slice" / "kubepods-pod1.slice" / "podrt-x.scope", V2_FILES)
    u = cgroups.read_usage("kubepods-pod1.slice:podrt:x", root=tmp_path)
    assert u is not None and u.processes == 3


def test_v2_parsers() -> None:
    assert v2.single("max\n") is None and v2.single("42\n") == 42 and v2.single(None) is None
    assert v2.flat_keyed("a 1\nb -2\nc x\n") == {"a": 1, "b": -2}
    assert v2.nested_keyed("8:0 rbytes=1 wbytes=2\n") == {"8:0": {"rbytes": "1", "wbytes": "2"}}
    assert v2.io_devices("8:16 rbytes=5 wios=x\nodd rbytes=1\n") == (DeviceIo(8, 16, read_bytes=5),)
    p = v2.pressure("some avg10=0.10 avg60=0.20 avg300=0.30 total=7\n")  # cpu.pressure before 5.13 has no "full"
    assert p is not None and p.some.total_us == 7 and p.full == PressureLine()


def _v1_tree(root: Path, path: str) -> None:
    rel = path.strip("/")
    _tree(root / "memory" / rel, {
        "memory.usage_in_bytes": "10485760\n", "memory.limit_in_bytes": "9223372036854771712\n",
        "memory.stat": "cache 1\nrss 2\ntotal_cache 6000000\ntotal_rss 4096000\ntotal_mapped_file 3000\ntotal_inactive_file 2000000\n"
                       "total_pgfault 321\ntotal_pgmajfault 5\n",
        "memory.failcnt": "12\n", "memory.max_usage_in_bytes": "20971520\n", "memory.memsw.usage_in_bytes": "10493952\n",
        "memory.memsw.limit_in_bytes": "9223372036854771712\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "tasks": "1\n2\n3\n4\n"})
    _tree(root / "cpuacct" / rel, {"cpuacct.usage": "2500000\n", "cpuacct.stat": "user 150\nsystem 100\n"})
    _tree(root / "cpu" / rel, {"cpu.stat": "nr_periods 40\nnr_throttled 7\nthrottled_time 900000\n"})
    _tree(root / "pids" / rel, {"pids.current": "3\n", "pids.max": "max\n", "cgroup.procs": "1\n2\n"})
    _tree(root / "blkio" / rel, {
        "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n",
        "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n"})
    _tree(root / "hugetlb" / rel, {"hugetlb.2MB.usage_in_bytes": "2097152\n"})


def test_v1_reader_reads_every_counter(tmp_path: Path) -> None:
    _v1_tree(tmp_path, "/podrt/podrt-abc")
    u = cgroups.read_usage("/podrt/podrt-abc", root=tmp_path)
    assert u is not None
    hz = cgroups.v1.USER_HZ
    assert (u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns) == (2_500_000, 150 * 10**9 // hz, 100 * 10**9 // hz)
    assert (u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_ns) == (40, 7, 900_000)
    assert (u.memory_bytes, u.working_set_bytes, u.rss_bytes, u.cache_bytes) == (10485760, 10485760 - 2000000, 4096000, 6000000)
    assert (u.page_faults, u.major_page_faults, u.limit_bytes, u.limit_hits) == (321, 5, None, 12)  # 2^63 rounded: no limit
    assert (u.oom_kills, u.swap_bytes, u.swap_limit_bytes, u.processes) == (1, 8192, None, 3)  # pids.current, not tasks
    assert (u.io_read_bytes, u.io_write_bytes, u.io_reads, u.io_writes) == (4096, 8192, 1, 2)
    assert u.io_devices == (DeviceIo(8, 0, 4096, 8192, 1, 2),)  # Sync, Total: not counted twice
    assert (u.memory_max_bytes, u.mapped_file_bytes, u.processes_limit) == (20 << 20, 3000, None)  # pids.max "max"
    assert cgroups.procs("/podrt/podrt-abc", root=tmp_path) == [1, 2] and cgroups.procs("/gone", root=tmp_path) == []
    assert u.hugetlb_bytes == (("2MB", 2 << 20),) and u.cpu_pressure is None
    assert cgroups.oom_killed("/podrt/podrt-abc", root=tmp_path)
    assert cgroups.read_usage("/podrt/gone", root=tmp_path) is None


def test_hierarchy_detection(tmp_path: Path) -> None:
    assert hierarchy.detect(tmp_path) is cgroups.Hierarchy.LEGACY
    _tree(tmp_path / "unified", {"cgroup.controllers": ""})
    (tmp_path / "memory").mkdir()
    assert hierarchy.detect(tmp_path) is cgroups.Hierarchy.HYBRID
    assert hierarchy.available("memory", tmp_path) and not hierarchy.available("hugetlb", tmp_path)
    v2root = tmp_path / "v2"
    _tree(v2root, {"cgroup.controllers": "cpu memory pids\n", "cgroup.subtree_control": "memory\n"})
    assert hierarchy.detect(v2root) is cgroups.Hierarchy.UNIFIED
    assert hierarchy.hierarchies(v2root) == [v2root]
    assert hierarchy.available("pids", v2root) and not hierarchy.available("hugetlb", v2root)
    assert hierarchy.offered_to("/", v2root) == {"cpu", "memory", "pids"} and hierarchy.enabled_below("/", v2root) == {"memory"}


def test_total_of_a_pods_cgroups() -> None:
    a = Usage(cpu_ns=1, processes=1, limit_bytes=5, swap_bytes=1, hugetlb_bytes=(("2MB", 1),))
    b = Usage(cpu_ns=2, processes=2, limit_bytes=7, swap_bytes=2, hugetlb_bytes=(("2MB", 2), ("1GB", 1)))
    t = cgroups.total([a, b])
    assert t is not None and (t.cpu_ns, t.processes, t.limit_bytes, t.swap_bytes) == (3, 3, 7, 3)
    assert t.hugetlb_bytes == (("1GB", 1), ("2MB", 3))
    unlimited = cgroups.total([a, Usage(cpu_ns=1)])
    assert unlimited is not None and unlimited.limit_bytes is None and unlimited.swap_bytes is None
    assert cgroups.total([]) is None


def test_removal_goes_children_first(tmp_path: Path) -> None:
    """v2 removes only empty leaves: a pod's cgroup with nested ones goes
    deepest first; the shared parent goes only when empty; one still in use
    (EBUSY) is reported."""
    (tmp_path / "cgroup.controllers").write_text("")
    (tmp_path / "podrt" / "podrt-a" / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / "podrt" / "podrt-b").mkdir()
    cgroups.remove("/podrt/podrt-a", prune_parent="/podrt", root=tmp_path)
    assert not (tmp_path / "podrt" / "podrt-a").exists() and (tmp_path / "podrt").is_dir()  # b still there
    cgroups.remove("/podrt/podrt-b", prune_parent="/podrt", root=tmp_path)
    assert not (tmp_path / "podrt").exists()
    cgroups.remove("/podrt/podrt-b", prune_parent="/podrt", root=tmp_path)  # idempotent
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "cgroup.procs").write_text("1\n")  # rmdir: ENOTEMPTY here, EBUSY on a real cgroup; both said as EBUSY
    with pytest.raises(OSError) as err:
        cgroups.remove("/busy", root=tmp_path)
    assert err.value.errno == errno.EBUSY


def test_podrt_check_names_the_hierarchy_and_a_missing_controller(tmp_path: Path) -> None:
    """`podrt check` on fake roots: v2 with and without memory offered, v1 without pids."""
    from podrt.config import Config
    from podrt.node.check import cgroup_checks

    _tree(tmp_path / "v2", {"cgroup.controllers": "cpu io memory pids\n", "cgroup.subtree_control": "cpu memory\n"})
    hierarchy, controllers = cgroup_checks(Config(), tmp_path / "v2")
    assert (hierarchy.detail, controllers.ok) == ("v2, the unified hierarchy", True)
    assert "offers cpu io memory pids to pods' cgroups (/podrt), enables cpu memory" in controllers.detail
    assert "without cpuset, hugetlb, limits of that kind are not applied" in controllers.detail
    (tmp_path / "v2" / "cgroup.controllers").write_text("cpu pids\n")
    _, controllers = cgroup_checks(Config(), tmp_path / "v2")
    assert not controllers.ok and controllers.detail.endswith("missing memory")
    assert "cgroup.controllers must list memory" in controllers.fix and "+memory" in controllers.fix
    for name in ("cpu", "memory", "blkio"):
        (tmp_path / "v1" / name).mkdir(parents=True)
    hierarchy, controllers = cgroup_checks(Config(), tmp_path / "v1")
    assert hierarchy.detail == "v1" and not controllers.ok and "missing: pids" in controllers.detail


def test_v2_reader_takes_an_unreadable_or_odd_file_for_absent(tmp_path: Path) -> None:
    """A PSI file the kernel has but answers EOPNOTSUPP for (psi=0), or any file
    that cannot be read (a directory stands in here) or parsed: counters 0, no
    pressure, never an exception out of a stats call."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    _tree(tmp_path / "odd", {**V2_FILES, "memory.current": "", "io.stat": "\n8:0 rbytes=x\n",
                             "memory.pressure": "some avg10=nan? total=1\n"})
    (tmp_path / "odd" / "cpu.pressure").unlink()
    (tmp_path / "odd" / "cpu.pressure").mkdir()
    u = cgroups.read_usage("/odd", root=tmp_path)
    assert u is not None and u.cpu_ns == 2_500_000
    assert (u.memory_bytes, u.io_read_bytes, u.cpu_pressure, u.memory_pressure) == (0, 0, None, None)


def test_swap_accounting_on_v2_looks_at_a_cgroup_with_memory(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "init.scope").mkdir()  # no memory enabled for it: no answer yet, and none remembered
    assert not hierarchy.swap_accounting(tmp_path)
    _tree(tmp_path / "podrt", {"memory.max": "max\n", "memory.swap.max": "max\n"})
    assert hierarchy.swap_accounting(tmp_path)
    (tmp_path / "podrt" / "memory.swap.max").unlink()  # decided once: a host does not change its mind
    assert hierarchy.swap_accounting(tmp_path)
    other = tmp_path / "noswap"
    _tree(other, {"cgroup.controllers": "memory\n"})
    _tree(other / "podrt", {"memory.max": "max\n"})  # a kernel without swap accounting
    assert not hierarchy.swap_accounting(other)
