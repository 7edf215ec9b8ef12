"""CDI devices on the real parts: spec files the tests write into a spec dir
of the test daemon's own (never the host's /etc/cdi), a container that gets
a device's env, device nodes (the device cgroup rule decides what it may do
with them), mount, hooks and groups; the annotation form; a spec written or
changed a moment before CreateContainer; a bad file beside good ones; an
unknown device or a bad name refused."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.test_containers import (
    _config,
    _create,
    _exec,
    _module_daemon,
    _pod,
    _remove_pod,
    _running,
    _status,
)
from tests.support.client import connect
from tests.support.daemon import DaemonProcess
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not all(map(os.path.exists, ("/dev/fuse", "/dev/loop-control"))),
                       reason="needs /dev/fuse and /dev/loop-control: devices runc does not allow by default"),
]


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """The spec dir (cdi/), a dir a spec mounts (data/), and where the hooks write (hooks/)."""
    path = Path(tempfile.mkdtemp(prefix="podrt-cdi-"))
    path.chmod(0o755)
    for sub in ("cdi", "data", "hooks"):
        (path / sub).mkdir()
    (path / "data" / "hello").write_text("from the CDI mount\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(registry: Registry, base: Path) -> Iterator[DaemonProcess]:
    with _module_daemon(registry, {"runtime": {"cdi_spec_dirs": ["/nonexistent-cdi", str(base / "cdi")]}}) as proc:
        yield proc


def _gpu_spec(base: Path) -> str:
    """YAML, as vendors write it; the nodes' numbers come from the host's nodes (the device
    cgroup goes by number: one host device per permission tested)."""
    hook_env = "[PATH=/usr/bin:/bin]"
    return f"""\
cdiVersion: 0.7.0
kind: test.podrt.io/gpu
containerEdits:
  env: [CDI_SHARED=yes]
devices:
  - name: gpu0
    containerEdits:
      env: [CDI_DEV=gpu0, CRI_VAR=from-cdi]
      deviceNodes:
        - path: /dev/cdi-test0
          hostPath: /dev/fuse
          permissions: r
        - path: /dev/cdi-none
          hostPath: /dev/loop-control
          permissions: none
        - path: /dev/cdi-zero
          hostPath: /dev/zero
      mounts:
        - hostPath: {base / "data"}
          containerPath: /cdi-data
          options: [ro, nosuid, nodev, rbind]
      hooks:
        - hookName: createRuntime
          path: /bin/sh
          args: [sh, -c, "cat > {base / 'hooks'}/created.json"]
          env: {hook_env}
        - hookName: poststop
          path: /bin/sh
          args: [sh, -c, "touch {base / 'hooks'}/stopped"]
          env: {hook_env}
      additionalGids: [4242]
"""


async def test_a_cdi_device_reaches_the_container(daemon: DaemonProcess, registry: Registry, base: Path) -> None:
    (base / "cdi" / "gpu.yaml").write_text(_gpu_spec(base))
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        cid = await _running(c, registry, pod, "gpu", cdi_devices=[cri.CdiDevice(name="test.podrt.io/gpu=gpu0")],
                             envs=[cri.KeyValue(key="CRI_VAR", value=b"from-cri")])
        script = ("echo $CDI_SHARED $CDI_DEV $CRI_VAR; id -G; cat /cdi-data/hello; touch /cdi-data/x 2>/dev/null || echo ro; "
                  "(exec 3</dev/cdi-test0) && echo read ok; (exec 3>/dev/cdi-test0) 2>/dev/null || echo write refused; "
                  "(exec 3</dev/cdi-none) 2>/dev/null || echo none refused; head -c 4 /dev/cdi-zero | od -An -tx1")
        out = (await _exec(c, cid, "/bin/sh", "-c", script)).stdout.decode().splitlines()
        assert out[0] == "yes gpu0 from-cdi"  # the spec's and the device's env; CDI's wins over the CRI's
        assert "4242" in out[1].split()
        assert out[2:] == ["from the CDI mount", "ro", "read ok", "write refused", "none refused", " 00 00 00 00"]
        fuse = os.stat("/dev/fuse")
        listing = (await _exec(c, cid, "/bin/ls", "-ln", "/dev/cdi-test0")).stdout.decode().split()
        assert listing[0].startswith("c") and listing[4:6] == [f"{os.major(fuse.st_rdev)},", str(os.minor(fuse.st_rdev))]
        created = json.loads((base / "hooks" / "created.json").read_text())  # runc ran the hook with the state
        assert created["id"] == cid
        st = await _status(c, cid)
        assert 4242 in st.user.linux.supplemental_groups
        verbose = await c.runtime.container_status(cri.ContainerStatusRequest(container_id=cid, verbose=True))
        assert json.loads(verbose.info["info"])["cdiDevices"] == ["test.podrt.io/gpu=gpu0"]
        assert not (base / "hooks" / "stopped").exists()
        await _remove_pod(c, pod[0])
        assert (base / "hooks" / "stopped").exists()  # poststop: at runc delete


async def test_annotations_fresh_and_changed_specs_and_refusals(daemon: DaemonProcess, registry: Registry, base: Path) -> None:
    cdi = base / "cdi"
    (cdi / "broken.yaml").write_text("cdiVersion: 0.6.0\nkind: [unclosed\n")  # refused, alone
    (cdi / "future.json").write_text(json.dumps({"cdiVersion": "9.0.0", "kind": "test.podrt.io/nic", "devices": []}))
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)

        async def env_of(name: str, value: str) -> str:
            cid = await _running(c, registry, pod, name, annotations={"cdi.k8s.io/test_nic0": value})
            return (await _exec(c, cid, "/bin/sh", "-c", "echo $NIC")).stdout.decode().strip()

        def write(env: str) -> None:  # in place: same name, same size, at once before the creation
            doc = {"cdiVersion": "0.3.0", "kind": "test.podrt.io/nic",
                   "devices": [{"name": "nic0", "containerEdits": {"env": [f"NIC={env}"]}}]}
            (cdi / "nic.json").write_text(json.dumps(doc))

        write("one")
        assert await env_of("a", "test.podrt.io/nic=nic0") == "one"
        write("two")
        assert await env_of("b", "test.podrt.io/nic=nic0") == "two"
        for devices, annotations, why in [
            (["test.podrt.io/nic=nic9"], {}, f"CDI device test.podrt.io/nic=nic9: no CDI spec in /nonexistent-cdi, {cdi} "
                                             f"defines it (refused spec files: {cdi / 'broken.yaml'}: not valid YAML"),
            ([], {"cdi.k8s.io/x": "test.podrt.io/nic=nic0,test.podrt.io/gpu=gpu9"}, "CDI device test.podrt.io/gpu=gpu9: "),
            (["nic0"], {}, "config.CDI_devices[0].name: 'nic0' is not a fully qualified CDI device name"),
        ]:
            config = _config(registry, "bad", cdi_devices=[cri.CdiDevice(name=d) for d in devices], annotations=annotations)
            with pytest.raises(GRPCError) as err:
                await _create(c, pod, config)
            assert err.value.status == Status.INVALID_ARGUMENT and why in (err.value.message or ""), err.value.message
        await _remove_pod(c, pod[0])
    log = daemon.log()
    assert f"CDI spec {cdi / 'broken.yaml'} is refused: not valid YAML" in log
    assert f"CDI spec {cdi / 'future.json'} is refused: cdiVersion '9.0.0'" in log
