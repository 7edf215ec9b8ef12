"""User namespaces of pods without a host: the CRI request converted, the
mappings checked (CRI's rules: NODE, or POD with one range each that maps
container ID 0), a container's options held to its pod's, the records kept."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from podrt.api.runtime import v1 as cri
from podrt.config import Config, RuntimeConfig, RuntimeHandler
from podrt.container.spec import build_container_spec
from podrt.container.validate import check_request as check_container
from podrt.cri.container_convert import container_config
from podrt.cri.sandbox_convert import sandbox_config
from podrt.errors import InvalidArgument
from podrt.model.container import ContainerConfig, Mount
from podrt.model.sandbox import IdMapping, NamespaceOptions, NsMode, SandboxConfig, UserNamespace
from podrt.node.status import RuntimeStatusManager
from podrt.oci import features
from podrt.oci.features import HandlerFeatures
from podrt.sandbox.infra_spec import build_infra_spec
from podrt.sandbox.validate import check_request
from podrt.state.format import CONTAINER_FORMAT, SANDBOX_FORMAT
from tests.unit.test_container_spec import _ctx, _pod, host  # noqa: F401  (host: a fixture)
from tests.unit.test_state_store import _container, _sandbox

MAP = IdMapping(0, 1000, 100000)
POD = UserNamespace(NsMode.POD, (MAP,), (MAP,))


def _wire(mode: cri.NamespaceMode, uids: list[tuple[int, int, int]] = (), gids: list[tuple[int, int, int]] | None = None) -> cri.UserNamespace:  # type: ignore[assignment]
    def maps(ms: list[tuple[int, int, int]]) -> list[cri.IdMapping]:
        return [cri.IdMapping(container_id=c, host_id=h, length=n) for c, h, n in ms]
    return cri.UserNamespace(mode=mode, uids=maps(uids), gids=maps(uids if gids is None else gids))


def _pod_request(userns: cri.UserNamespace | None) -> cri.RunPodSandboxRequest:
    ns = cri.NamespaceOption() if userns is None else cri.NamespaceOption(userns_options=userns)
    return cri.RunPodSandboxRequest(config=cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="p", uid="u", namespace="n"),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(namespace_options=ns))))


def test_conversion() -> None:
    assert sandbox_config(_pod_request(None)).userns == UserNamespace()
    assert not sandbox_config(_pod_request(None)).own_userns
    assert sandbox_config(_pod_request(_wire(cri.NamespaceMode.NODE))).userns == UserNamespace()
    cfg = sandbox_config(_pod_request(_wire(cri.NamespaceMode.POD, [(0, 1000, 100000)])))
    assert cfg.userns == POD and cfg.own_userns and cfg.userns.root == (1000, 1000)
    with pytest.raises(InvalidArgument, match=r"userns_options.mode: unknown value 7"):
        sandbox_config(_pod_request(_wire(7)))  # type: ignore[arg-type]
    sc = cri.LinuxContainerSecurityContext(namespace_options=cri.NamespaceOption(userns_options=_wire(cri.NamespaceMode.POD, [(0, 1000, 100000)])))
    req = cri.CreateContainerRequest(config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c"),
                                                                 linux=cri.LinuxContainerConfig(security_context=sc)))
    assert container_config(req).userns == POD
    assert container_config(cri.CreateContainerRequest(config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c")))).userns is None


def _cfg(userns: UserNamespace, **kw: object) -> SandboxConfig:
    return SandboxConfig(name="p", uid="u", namespace="n", userns=userns, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("userns,extra,fragment", [
    (UserNamespace(NsMode.CONTAINER), {}, "mode: CONTAINER is not supported"),
    (UserNamespace(NsMode.TARGET), {}, "mode: TARGET is not supported"),
    (UserNamespace(NsMode.NODE, (MAP,), (MAP,)), {}, "mode NODE takes no uids or gids"),
    (UserNamespace(NsMode.POD), {}, "userns_options.uids: mode POD takes exactly one mapping, got 0"),
    (UserNamespace(NsMode.POD, (MAP, IdMapping(0, 2000, 100000)), (MAP,)), {}, "uids: mode POD takes exactly one mapping, got 2"),
    (UserNamespace(NsMode.POD, (MAP,), ()), {}, "gids: mode POD takes exactly one mapping, got 0"),
    (UserNamespace(NsMode.POD, (IdMapping(1, 1000, 100000),), (MAP,)), {}, "uids[0].container_id is 1"),
    (UserNamespace(NsMode.POD, (MAP,), (IdMapping(0, 1000, 0),)), {}, "gids[0].length must be > 0"),
    (UserNamespace(NsMode.POD, (IdMapping(0, 2**32 - 10, 11),), (MAP,)), {}, "go beyond the last ID"),
    (POD, {"namespaces": NamespaceOptions(pid=NsMode.NODE)}, "cannot share the host's PID namespace"),
    (POD, {"namespaces": NamespaceOptions(ipc=NsMode.NODE)}, "cannot share the host's IPC namespace"),
])
def test_refusals(userns: UserNamespace, extra: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_request(_cfg(userns, **extra), Config())
    assert fragment in str(err.value)
    assert "namespace_options.userns_options" in str(err.value)


def test_accepted() -> None:
    check_request(_cfg(POD), Config())
    check_request(_cfg(UserNamespace(NsMode.POD, (IdMapping(0, 2**32 - 11, 11),), (MAP,))), Config())
    check_request(_cfg(POD, namespaces=NamespaceOptions(network=NsMode.NODE)), Config())
    check_request(_cfg(UserNamespace()), Config())


def test_a_container_runs_in_its_pods_user_namespace() -> None:
    pod = _sandbox(config=_cfg(POD))
    check_container(ContainerConfig(name="c", image="i"), pod)  # none sent: the pod's
    check_container(ContainerConfig(name="c", image="i", userns=POD), pod)
    for other in (UserNamespace(), UserNamespace(NsMode.POD, (IdMapping(0, 2000, 100000),), (MAP,))):
        with pytest.raises(InvalidArgument, match="userns_options must be the pod's"):
            check_container(ContainerConfig(name="c", image="i", userns=other), pod)
    check_container(ContainerConfig(name="c", image="i", userns=UserNamespace()), _sandbox())


def test_records_keep_the_user_namespace() -> None:
    pod = _sandbox(config=attrs.evolve(_sandbox().config, userns=POD))
    assert SANDBOX_FORMAT.decode(SANDBOX_FORMAT.encode(pod)) == pod
    ctr = _container(config=attrs.evolve(_container().config, userns=POD))
    assert CONTAINER_FORMAT.decode(CONTAINER_FORMAT.encode(ctr)) == ctr


# ---- the specs: the user namespace joined first, its mappings given (runc 1.1 wants them) -------------

MAPPINGS = [{"containerID": 0, "hostID": 1000, "size": 100000}]


def test_infra_spec_joins_the_pinned_user_namespace() -> None:
    from tests.unit.test_oci_spec import make_plan

    plan = make_plan(config={"userns": POD}, userns_path="/run/podrt/userns/abc")
    linux = build_infra_spec(plan)["linux"]
    assert linux["namespaces"][0] == {"type": "user", "path": "/run/podrt/userns/abc"}
    assert linux["uidMappings"] == linux["gidMappings"] == MAPPINGS
    plain = build_infra_spec(make_plan())["linux"]
    assert "user" not in [n["type"] for n in plain["namespaces"]] and "uidMappings" not in plain


@pytest.mark.usefixtures("host")
def test_container_spec_joins_the_pods_user_namespace(tmp_path: Path) -> None:
    pod = attrs.evolve(_pod(userns=POD), userns_path="/run/podrt/userns/p")
    spec = build_container_spec(_ctx(tmp_path, ContainerConfig(name="c", image="i"), pod), Config())
    assert spec["linux"]["namespaces"][0] == {"type": "user", "path": "/run/podrt/userns/p"}
    assert spec["linux"]["uidMappings"] == spec["linux"]["gidMappings"] == MAPPINGS
    plain = build_container_spec(_ctx(tmp_path, ContainerConfig(name="c", image="i")), Config())
    assert "user" not in [n["type"] for n in plain["linux"]["namespaces"]] and "uidMappings" not in plain["linux"]


@pytest.mark.usefixtures("host")
def test_an_id_mapped_volume_is_bound_in_place_of_its_host_path(tmp_path: Path) -> None:
    cfg = ContainerConfig(name="c", image="i", mounts=(Mount("/vol", "/srv/data"), Mount("/other", "/srv/other")))
    spec = build_container_spec(_ctx(tmp_path, cfg, volume_paths={0: "/run/podrt/idmap/c/binds/0"}), Config())
    sources = {m["destination"]: m["source"] for m in spec["mounts"]}
    assert sources["/vol"] == "/run/podrt/idmap/c/binds/0" and sources["/other"] == "/srv/other"


# ---- what Status says: the handler joins user namespaces, and the host gives them their files ----------


def test_the_handler_part_is_its_features_document() -> None:
    runc = {"linux": {"namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]}}
    assert features.userns_supported("/usr/sbin/runc", runc)
    assert not features.userns_supported("/x", {"linux": {"namespaces": ["pid", "network"]}})
    assert not features.userns_supported("/x", None) and not features.userns_supported("/x", {"linux": []})


class _Host:
    def __init__(self, problem: str | None) -> None:
        self._problem = problem

    async def problem(self) -> str | None:
        return self._problem


@pytest.mark.parametrize("problem", [None, "mount_setattr MOUNT_ATTR_IDMAP: Invalid argument"])
async def test_status_needs_both(monkeypatch: pytest.MonkeyPatch, problem: str | None) -> None:
    monkeypatch.setattr(features, "detect", lambda path: HandlerFeatures(rro=True, userns=path == "/runc"))
    runtimes = {"runc": RuntimeHandler(runtime_path="/runc"), "crun": RuntimeHandler(runtime_path="/crun")}
    config = Config(runtime=RuntimeConfig(default_runtime="runc", runtimes=runtimes))
    found = dict(await RuntimeStatusManager(config, idmap=_Host(problem)).runtime_handlers())  # type: ignore[arg-type]
    assert {name: f.userns for name, f in found.items()} == {"": problem is None, "runc": problem is None, "crun": False}
    assert all(f.rro for f in found.values())
