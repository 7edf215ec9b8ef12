"""ContainerConfig.stop_signal: the CRI enum <-> "SIGRTMIN+3"-style names, the
signal in effect (the request's over the image's, else SIGTERM), what
ContainerStatus shows and what the state file keeps."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from podrt.api.runtime import v1 as cri
from podrt.container.create import image_stop_signal
from podrt.container.status import ContainerView
from podrt.cri import container_convert as cconv
from podrt.cri.fields import signal_name, wire_signal
from podrt.errors import InvalidArgument
from podrt.model.container import ContainerConfig, ContainerStatus
from podrt.oci import runtime, signals
from podrt.state.format import CONTAINER_FORMAT
from tests.unit.test_container_create import APP, Gate, Harness
from tests.unit.test_container_status import make_deps, make_state

V1 = Path(__file__).parent / "state_v1"


@pytest.mark.parametrize("text, num, name", [
    ("SIGTERM", 15, "SIGTERM"), ("term", 15, "SIGTERM"), ("15", 15, "SIGTERM"), (" SIGINT ", 2, "SIGINT"),
    ("SIGCLD", 17, "SIGCLD"), ("17", 17, "SIGCHLD"), ("SIGIOT", 6, "SIGIOT"), ("SIGSTKFLT", 16, "SIGSTKFLT"),
    ("SIGRTMIN", 34, "SIGRTMIN"), ("RTMIN+3", 37, "SIGRTMIN+3"), ("SIGRTMIN+15", 49, "SIGRTMIN+15"),
    ("SIGRTMIN+16", 50, "SIGRTMAX-14"), ("SIGRTMAX-1", 63, "SIGRTMAX-1"), ("64", 64, "SIGRTMAX"),
    ("0", None, None), ("32", None, None), ("65", None, None), ("SIGRTMAX+1", None, None), ("SIGRTMIN-1", None, None),
    ("SIGFOO", None, None), ("", None, None), ("SIG_DFL", None, None), ("²", None, None),
])
def test_names_and_numbers(text: str, num: int | None, name: str | None) -> None:
    assert (signals.number(text), signals.canonical(text)) == (num, name)


def test_every_cri_signal_has_a_name_and_comes_back() -> None:
    for member in cri.Signal:
        if member == cri.Signal.RUNTIME_DEFAULT:
            continue
        name = signal_name("f", member)
        assert "PLUS" not in name and "MINUS" not in name
        assert signals.number(name) is not None, name
        assert wire_signal(name) == member
    assert signal_name("f", cri.Signal.SIGRTMINPLUS3) == "SIGRTMIN+3" and signals.number("SIGRTMIN+3") == 37
    assert signal_name("f", cri.Signal.SIGRTMAXMINUS1) == "SIGRTMAX-1" and signal_name("f", cri.Signal.SIGRTMAX) == "SIGRTMAX"
    assert signal_name("f", cri.Signal.RUNTIME_DEFAULT) == ""
    assert wire_signal("15") == cri.Signal.SIGTERM and wire_signal("nonsense") == cri.Signal.RUNTIME_DEFAULT
    with pytest.raises(InvalidArgument, match="config.stop_signal: unknown signal 99"):
        signal_name("config.stop_signal", 99)


def test_runc_is_given_numbers() -> None:
    """runc's kill knows the names of signals 1 to 31 only."""
    assert runtime._signal_arg("SIGRTMIN+3") == 37 and runtime._signal_arg("SIGUSR1") == int(signal.SIGUSR1)
    assert runtime._signal_arg(signal.SIGKILL) == 9 and runtime._signal_arg("SIGFOO") == "SIGFOO"


def test_the_image_stop_signal_however_written() -> None:
    assert image_stop_signal({"StopSignal": "15"}) == "SIGTERM"
    assert image_stop_signal({"StopSignal": "RTMIN+3"}) == "SIGRTMIN+3"
    assert image_stop_signal({"StopSignal": "SIGFOO"}) == "SIGTERM"  # names none: logged
    assert image_stop_signal({}) == image_stop_signal(None) == "SIGTERM"


def test_convert_request_and_status(tmp_path: Path) -> None:
    req = cri.CreateContainerRequest(config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c"),
                                                                image=cri.ImageSpec(image="i"), stop_signal=cri.Signal.SIGUSR1))
    assert cconv.container_config(req).stop_signal == "SIGUSR1"
    req.config.stop_signal = cri.Signal.RUNTIME_DEFAULT
    assert cconv.container_config(req).stop_signal == ""
    req.config.stop_signal = 66  # type: ignore[assignment]
    with pytest.raises(InvalidArgument, match="config.stop_signal"):
        cconv.container_config(req)
    state = make_state(make_deps(tmp_path), stop_signal="SIGRTMIN+3")
    status = cconv.container_status(ContainerView(state, ContainerStatus.CREATED))
    assert status.stop_signal == cri.Signal.SIGRTMINPLUS3


async def test_the_requests_signal_is_used_over_the_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    Gate.opened.set()
    cid = await h.creator.create("p1", ContainerConfig(name="app", image="busybox", stop_signal="SIGUSR1"))
    assert h.table.get(cid).stop_signal == "SIGUSR1"  # the image says SIGINT
    other = await h.creator.create("p1", ContainerConfig(name="other", image=APP.image))
    assert h.table.get(other).stop_signal == "SIGINT"


def test_the_state_file_keeps_it(tmp_path: Path) -> None:
    state = make_state(make_deps(tmp_path), config=ContainerConfig(name="app", stop_signal="SIGUSR1"), stop_signal="SIGUSR1")
    again = CONTAINER_FORMAT.decode(CONTAINER_FORMAT.encode(state))
    assert (again.config.stop_signal, again.stop_signal) == ("SIGUSR1", "SIGUSR1")
    old = CONTAINER_FORMAT.decode((V1 / "container-exited.json").read_bytes())  # written before the field
    assert (old.config.stop_signal, old.stop_signal) == ("", "SIGINT")
    assert "stop_signal" not in json.loads((V1 / "container-exited.json").read_bytes())["config"]
