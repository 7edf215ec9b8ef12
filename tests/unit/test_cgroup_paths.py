"""Where runc puts a cgroupsPath, so the OOM counter is read from the right directory."""

from __future__ import annotations

import pytest

from podrt.host.cgroups import fs_path, oom_killed, parent_dir, shared_parent


@pytest.mark.parametrize("cgroups_path, expected", [
    ("/podrt/podrt-abc", "/podrt/podrt-abc"),  # cgroupfs: as it is
    ("system.slice:podrt:abc", "/system.slice/podrt-abc.scope"),
    ("kubepods-besteffort-pod1.slice:podrt:x",
     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/podrt-x.scope"),  # nested slices
])
def test_fs_path(cgroups_path: str, expected: str) -> None:
    assert fs_path(cgroups_path) == expected


def test_a_cgroup_that_is_gone_was_not_oom_killed() -> None:
    assert oom_killed("/podrt/podrt-" + "0" * 64) is False


@pytest.mark.parametrize("parent, expected, shared", [
    ("/kubepods/burstable/pod1", "/kubepods/burstable/pod1", False),  # the kubelet's cgroupfs driver
    ("kubepods-burstable-pod1.slice", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice", False),
    ("/podrt", "/podrt", True),  # podrt's defaults hold every pod that names no parent
    ("system.slice", "/system.slice", True),
])
def test_a_pods_parent_dir_and_whether_it_is_its_own(parent: str, expected: str, shared: bool) -> None:
    assert (parent_dir(parent), shared_parent(parent)) == (expected, shared)
