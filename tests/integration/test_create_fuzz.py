"""Semi-valid CreateContainer requests (tests/support/ctrfuzz.py) to the real
daemon: a valid pod and image, one odd field per request. Every answer is a
client-side status (never INTERNAL or UNKNOWN), every container made starts,
execs, stops and is removed, the log has no traceback, nothing is left.

PODRT_CREATE_FUZZ_COUNT sets the number of requests (200 by default, for
CI; the cgroup-v2 lane sends 20); PODRT_CREATE_FUZZ_SEED the seed. benchmarks/bench_create_fuzz.py is the long run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from podrt.api.runtime import v1 as cri
from tests.integration.test_containers import _module_daemon
from tests.integration.test_containers import pytestmark as containers_marks
from tests.support.client import connect
from tests.support.ctrfuzz import CreateFuzzer, run_create_fuzz
from tests.support.daemon import DaemonProcess
from tests.support.pods import pod_config
from tests.support.registry import Registry

pytestmark = [*containers_marks, pytest.mark.cgroups]  # cpusets, memory and unified keys: also in the cgroup-v2 lane

COUNT = int(os.environ.get("PODRT_CREATE_FUZZ_COUNT", "200"))
SEED = int(os.environ.get("PODRT_CREATE_FUZZ_SEED", "16"))


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry) as proc:
        yield proc


@pytest.mark.timeout(300 + COUNT)  # ~0.08 s a request here (15 s for 200): a long run's COUNT gets its time
async def test_semi_valid_create_requests_get_client_statuses(daemon: DaemonProcess, registry: Registry) -> None:
    d = daemon.dirs
    fuzzer = CreateFuzzer(SEED, d.base / "create-fuzz", f"{registry.host}/test/busybox:v1")
    config = pod_config()
    async with connect(d.socket) as c:
        pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
        result = await run_create_fuzz(c, pod_id, config, fuzzer, COUNT)
        left = (await c.runtime.list_containers(cri.ListContainersRequest())).containers
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    print(f"{result.sent} requests in {result.seconds:.1f} s, {result.created} created: {dict(result.statuses)}")
    assert result.created >= COUNT // 5, f"too few requests were valid enough to test the container's life: {dict(result.statuses)}"
    assert not result.offenders, "\n".join(result.offenders)
    assert not result.failures, "\n".join(result.failures)
    assert not left, f"containers left after removal: {[x.id for x in left]}"
