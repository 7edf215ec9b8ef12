"""What a runtime handler can do (oci/features.py: its `features` document and
the kernel, kept per binary) and recursive read-only mounts: their form
(container.validate), the handler's support (container.spec) and the `rro`
option in the OCI spec."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from podrt.api.runtime import v1 as cri
from podrt.config import Config, RuntimeConfig, RuntimeHandler
from podrt.container import spec as spec_mod
from podrt.container.validate import check_handler_has_rro, check_request
from podrt.cri import container_convert as cconv
from podrt.errors import InvalidArgument
from podrt.model.container import ContainerConfig, ContainerStatus, Mount, Propagation
from podrt.node.status import RuntimeStatusManager
from podrt.oci import features
from podrt.oci.features import HandlerFeatures
from tests.unit.test_container_create import Gate, Harness
from tests.unit.test_container_spec import _ctx, _pod, host, rootfs  # noqa: F401  (fixtures)
from tests.unit.test_container_status import make_deps, make_state

RUNC_LIKE = {"ociVersionMin": "1.0.0", "mountOptions": ["bind", "rbind", "ro", "rro", "rrw"]}


def _binary(tmp_path: Path, name: str, script: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def _answers(tmp_path: Path, name: str, doc: object) -> str:
    """A runtime binary whose `features` prints `doc` (and which counts its calls)."""
    (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    return _binary(tmp_path, name, f'echo x >> "{tmp_path}/{name}.calls"; [ "$1" = features ] && cat "{tmp_path}/{name}.json"')


@pytest.mark.parametrize("release, wanted, expected", [
    ("6.18.44-fc-v1045", (5, 12), True), ("5.12.0", (5, 12), True), ("5.11.22-amd64", (5, 12), False),
    ("4.19.0", (5, 12), False), ("garbage", (5, 12), False),
])
def test_kernel_versions(release: str, wanted: tuple[int, int], expected: bool) -> None:
    assert features.kernel_at_least(release, wanted) is expected


def test_rro_needs_the_option_and_the_kernel() -> None:
    assert features.rro_supported(RUNC_LIKE, "6.1.0")
    assert not features.rro_supported(RUNC_LIKE, "5.10.0")  # no mount_setattr
    assert not features.rro_supported({"mountOptions": ["ro"]}, "6.1.0")
    assert not features.rro_supported({"mountOptions": "rro"}, "6.1.0") and not features.rro_supported(None, "6.1.0")


def test_detect_asks_each_binary_once_and_again_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "_cache", {})
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "6.1.0", "#1", "x86_64")))
    runc = _answers(tmp_path, "runc", RUNC_LIKE)
    assert features.detect(runc) == features.detect(runc) == HandlerFeatures(rro=True, userns=False)
    assert (tmp_path / "runc.calls").read_text().count("x") == 1
    os.utime(runc, ns=(1, 1))  # an upgraded binary
    (tmp_path / "runc.json").write_text(json.dumps({"mountOptions": ["ro"]}))
    assert features.detect(runc) == HandlerFeatures()
    crun = _binary(tmp_path, "crun", 'echo "unknown command $1" >&2; exit 1')  # crun 1.8.1
    assert features.detect(crun) == HandlerFeatures()
    assert features.detect(_binary(tmp_path, "noisy", "echo not json")) == HandlerFeatures()
    assert features.detect(str(tmp_path / "absent")) == HandlerFeatures()


async def test_status_lists_the_default_handler_as_empty_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "_cache", {})
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "6.1.0", "#1", "x86_64")))
    runtimes = {"crun": RuntimeHandler(runtime_path=_binary(tmp_path, "crun", "exit 1")),
                "runc": RuntimeHandler(runtime_path=_answers(tmp_path, "runc", RUNC_LIKE))}
    config = Config(runroot=str(tmp_path / "run"), runtime=RuntimeConfig(default_runtime="runc", runtimes=runtimes))
    found = await RuntimeStatusManager(config).runtime_handlers()
    assert found == [("", HandlerFeatures(rro=True)), ("crun", HandlerFeatures()), ("runc", HandlerFeatures(rro=True))]


def _rro_mount(**fields: object) -> Mount:
    return Mount(**{"container_path": "/data", "host_path": "/tmp", "readonly": True, "recursive_read_only": True, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize("mount, fragment", [
    (_rro_mount(readonly=False), "mounts[0].recursive_read_only needs readonly: true"),
    (_rro_mount(propagation=Propagation.HOST_TO_CONTAINER), "needs propagation PROPAGATION_PRIVATE, not PROPAGATION_HOST_TO_CONTAINER"),
    (_rro_mount(propagation=Propagation.BIDIRECTIONAL), "not PROPAGATION_BIDIRECTIONAL"),
])
def test_the_cri_forbids_rro_read_write_or_propagated(mount: Mount, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(fragment)):
        check_request(ContainerConfig(name="c", image="i", mounts=(mount,)), _pod())


def test_the_request_and_status_carry_it(tmp_path: Path) -> None:
    req = cri.CreateContainerRequest(config=cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="c"), image=cri.ImageSpec(image="i"),
        mounts=[cri.Mount(container_path="/d", host_path="/tmp", readonly=True, recursive_read_only=True)]))
    cfg = cconv.container_config(req)
    assert cfg.mounts[0].recursive_read_only and cfg.mounts[0].readonly
    state = make_state(make_deps(tmp_path), config=cfg)
    assert cconv.container_status(cconv.ContainerView(state, ContainerStatus.CREATED)).mounts[0].recursive_read_only


def test_the_spec_says_rro(rootfs: Path, host: None) -> None:  # noqa: F811
    plain = Mount("/plain", "/srv", readonly=True)
    cfg = ContainerConfig(name="c", image="i", mounts=(_rro_mount(), plain))
    spec = spec_mod.build_container_spec(_ctx(rootfs, cfg), Config())
    options = {m["destination"]: m.get("options") for m in spec["mounts"]}
    assert options["/data"] == ["rbind", "rro", "private"] and options["/plain"] == ["rbind", "ro", "private"]


async def test_a_handler_without_rro_refuses_it_before_anything_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "detect", lambda path: HandlerFeatures(rro=path == "/usr/sbin/runc"))
    cfg = ContainerConfig(name="c", image="i", mounts=(_rro_mount(),))
    check_handler_has_rro(cfg, "runc", Config())
    elsewhere = Config(runtime=RuntimeConfig(runtimes={"runc": RuntimeHandler(runtime_path="/usr/bin/crun")}))
    with pytest.raises(InvalidArgument, match=re.escape("mounts[0].recursive_read_only: runtime handler 'runc' does not support")):
        check_handler_has_rro(cfg, "runc", elsewhere)
    check_handler_has_rro(ContainerConfig(name="c", image="i"), "runc", elsewhere)
    h = Harness(tmp_path, monkeypatch)  # its pod's handler is runc, its config's runc /usr/sbin/runc
    Gate.opened.set()
    monkeypatch.setattr(features, "detect", lambda path: HandlerFeatures())
    with pytest.raises(InvalidArgument, match="recursive_read_only"):
        await h.creator.create("p1", ContainerConfig(name="app", image="busybox", mounts=(_rro_mount(),)))
    assert len(h.deps.names) == 0 and len(h.deps.ids) == 0 and len(h.table) == 0  # nothing was made
