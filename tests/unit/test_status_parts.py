"""The parts of pod and container statuses that many items have alike are
made once and shared (cri/sandbox_convert.py, cri/container_convert.py): each
status still says its own item's namespaces, network, image, user and resources."""

from __future__ import annotations

from pathlib import Path

import attrs

from podrt.api.runtime import v1 as cri
from podrt.container.status import ContainerView
from podrt.cri import container_convert as cconv
from podrt.cri import sandbox_convert as conv
from podrt.model.container import ContainerStatus, ContainerUser, HugepageLimit, Resources
from podrt.model.sandbox import NsMode
from tests.unit.test_container_status import make_deps, make_state
from tests.unit.test_listcache import _view


def _pod_status(view: object) -> cri.PodSandboxStatus:
    return cri.PodSandboxStatus().parse(bytes(conv.pod_sandbox_status(view)))  # type: ignore[arg-type]


def test_each_pod_status_has_its_own_namespaces_and_network() -> None:
    pod = _view(1, True, {})
    cfg = attrs.evolve(pod.state.config, namespaces=attrs.evolve(pod.state.config.namespaces, network=NsMode.NODE))
    host = attrs.evolve(pod, state=attrs.evolve(pod.state, config=cfg))
    own = attrs.evolve(host, state=attrs.evolve(
        host.state, ips=["10.0.0.2", "fd00::2"],
        config=attrs.evolve(cfg, namespaces=attrs.evolve(cfg.namespaces, network=NsMode.POD, pid=NsMode.CONTAINER))))
    for _ in range(2):  # the second time from the shared parts
        a, b = _pod_status(host), _pod_status(own)
        assert a.linux.namespaces.options.network == cri.NamespaceMode.NODE
        assert b.linux.namespaces.options.network == cri.NamespaceMode.POD
        assert b.linux.namespaces.options.pid == cri.NamespaceMode.CONTAINER
        assert a.network.ip == "" and b.network.ip == "10.0.0.2"
        assert [i.ip for i in b.network.additional_ips] == ["fd00::2"]


def test_each_container_status_has_its_own_image_user_and_resources(tmp_path: Path) -> None:
    deps = make_deps(tmp_path)
    plain = make_state(deps, "c1")
    r = Resources(cpu_shares=512, memory_limit=64 << 20, hugepage_limits=(HugepageLimit("2MB", 4096),),
                  unified={"memory.high": "1000000"})
    other = make_state(deps, "c2", image_ref="other:1", user=ContainerUser(uid=5, gid=6, supplemental_groups=(7,)),
                       config=attrs.evolve(plain.config, resources=r))
    again = make_state(deps, "c3", config=attrs.evolve(plain.config, resources=attrs.evolve(r, unified={"memory.high": "2"})))
    for _ in range(2):
        a, b, c = (cri.ContainerStatus().parse(bytes(cconv.container_status(ContainerView(s, ContainerStatus.RUNNING))))
                   for s in (plain, other, again))
        assert (a.image.image, b.image.image) == ("busybox", "other:1")
        assert not a.user.linux.uid and (b.user.linux.uid, b.user.linux.gid, b.user.linux.supplemental_groups) == (5, 6, [7])
        assert a.resources.linux.cpu_shares == cconv.linux_resources(plain.config.resources).cpu_shares
        assert b.resources.linux.cpu_shares == 512 and b.resources.linux.memory_limit_in_bytes == 64 << 20
        assert b.resources.linux.unified == {"memory.high": "1000000"} and c.resources.linux.unified == {"memory.high": "2"}
        assert [(h.page_size, h.limit) for h in b.resources.linux.hugepage_limits] == [("2MB", 4096)]
