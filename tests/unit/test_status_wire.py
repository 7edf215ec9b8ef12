"""Statuses encoded by hand (cri/status_wire.py) are byte for byte what
betterproto makes of the converters' messages, whatever the item holds."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podrt.container.status import ContainerView
from podrt.cri import container_convert as cconv
from podrt.cri import sandbox_convert as conv
from podrt.cri import status_wire
from podrt.model.container import ContainerStatus, ContainerUser, HugepageLimit, Mount, Propagation, Resources
from podrt.model.sandbox import NsMode
from tests.unit.test_container_status import make_deps, make_state
from tests.unit.test_listcache import _view

_text = st.text(max_size=12)
_maps = st.dictionaries(_text, _text, max_size=3)
_mounts = st.lists(st.builds(Mount, container_path=_text, host_path=_text, readonly=st.booleans(),
                             propagation=st.sampled_from(list(Propagation)), image=_text, image_sub_path=_text,
                             recursive_read_only=st.booleans()), max_size=3)
_ints = st.integers(min_value=0, max_value=2**62)


@pytest.fixture(scope="module")
def deps(tmp_path_factory: pytest.TempPathFactory) -> object:
    return make_deps(Path(tmp_path_factory.mktemp("deps")))


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from(list(ContainerStatus)), labels=_maps, annotations=_maps, mounts=_mounts,
       created=_ints, started=_ints, finished=_ints, exit_code=st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)),
       text=_text, image_ref=_text, attempt=st.integers(0, 2**32 - 1),
       user=st.one_of(st.none(), st.builds(ContainerUser, uid=_ints, gid=_ints,
                                           supplemental_groups=st.tuples(_ints))),
       signal=st.sampled_from(["", "SIGTERM", "SIGKILL", "SIGRTMIN+3"]), cpu=st.integers(0, 262144))
def test_container_status_bytes_are_betterprotos(deps: object, status: ContainerStatus, labels: dict[str, str],
                                                 annotations: dict[str, str], mounts: list[Mount], created: int,
                                                 started: int, finished: int, exit_code: int | None, text: str,
                                                 image_ref: str, attempt: int, user: ContainerUser | None,
                                                 signal: str, cpu: int) -> None:
    base = make_state(deps, "c1")  # type: ignore[arg-type]
    resources = Resources(cpu_shares=cpu, hugepage_limits=(HugepageLimit("2MB", cpu),), unified={"memory.high": text})
    cfg = attrs.evolve(base.config, name=text, attempt=attempt, labels=labels, annotations=annotations,
                       mounts=tuple(mounts), resources=resources)
    state = attrs.evolve(base, config=cfg, created_at=created, started_at=started, finished_at=finished,
                         exit_code=exit_code, reason=text, message=text[::-1], image_ref=image_ref, image_id=text,
                         log_path=text, user=user, stop_signal=signal)
    view = ContainerView(state, status)
    assert status_wire.container_status(view) == bytes(cconv.container_status(view))


@given(ready=st.booleans(), labels=_maps, annotations=_maps, ips=st.lists(_text.filter(bool), max_size=3),
       modes=st.tuples(*[st.sampled_from(list(NsMode))] * 3), created=_ints, text=_text,
       attempt=st.integers(0, 2**32 - 1))
def test_pod_status_bytes_are_betterprotos(ready: bool, labels: dict[str, str], annotations: dict[str, str],
                                           ips: list[str], modes: tuple[NsMode, NsMode, NsMode],
                                           created: int, text: str, attempt: int) -> None:
    pod = _view(1, ready, labels)
    network, pid, ipc = modes
    cfg = attrs.evolve(pod.state.config, annotations=annotations, name=text, uid=text[::-1],
                       namespace=f"{text}-ns", attempt=attempt,
                       namespaces=attrs.evolve(pod.state.config.namespaces, network=network, pid=pid, ipc=ipc))
    view = attrs.evolve(pod, state=attrs.evolve(pod.state, config=cfg, ips=ips, created_at=created,
                                                 runtime_handler=text))
    assert status_wire.pod_sandbox_status(view) == bytes(conv.pod_sandbox_status(view))


def test_shared_parts_are_encoded_once_per_message() -> None:
    """A sub-message is kept with its bytes: another message with the same id is encoded anew."""
    a = cconv.container_user(ContainerUser(uid=1, gid=2, supplemental_groups=(3,)))
    assert status_wire.shared(a) == bytes(a)
    a.linux.uid = 9  # never done to a shared message: shows the bytes are kept, not made again
    assert status_wire.shared(a) != bytes(a)
    b = cconv.container_user(ContainerUser(uid=4, gid=5))
    assert status_wire.shared(b) == bytes(b)
