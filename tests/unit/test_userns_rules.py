"""User namespaces of pods without a host: the CRI request converted, the
mappings checked (CRI's rules: NODE, or POD with one range each that maps
container ID 0), a container's options held to its pod's, the records kept."""

from __future__ import annotations

import attrs
import pytest

from podrt.api.runtime import v1 as cri
from podrt.config import Config
from podrt.container.validate import check_request as check_container
from podrt.cri.container_convert import container_config
from podrt.cri.sandbox_convert import sandbox_config
from podrt.errors import InvalidArgument
from podrt.model.container import ContainerConfig
from podrt.model.sandbox import IdMapping, NamespaceOptions, NsMode, SandboxConfig, UserNamespace
from podrt.sandbox.validate import check_request
from podrt.state.format import CONTAINER_FORMAT, SANDBOX_FORMAT
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
