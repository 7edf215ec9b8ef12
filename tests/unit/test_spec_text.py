"""A spec just written is read from memory for the verbose statuses
(steps/spec_files.spec_text), and never outlives what it stands for: a
rewrite replaces it, an undo drops it, and past the newest few it is read
from its file again."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from podrt.state.format import CONTAINER_FORMAT
from podrt.state.store import write_record
from podrt.steps import spec_files
from podrt.steps.spec_files import WRITTEN_KEPT, spec_text, write_spec
from tests.unit.test_state_store import _container


def _files(tmp_path: Path, name: str) -> list[str]:
    (tmp_path / "run" / name).mkdir(parents=True)
    (tmp_path / "state" / name).mkdir(parents=True)
    return [str(tmp_path / "run" / name / "config.json"), str(tmp_path / "state" / name / "config.json")]


def test_a_spec_just_written_is_read_from_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    read = spec_files._read
    monkeypatch.setattr(spec_files, "_read", lambda p: reads.append(p) or read(p))
    files = _files(tmp_path, "a")
    write_spec(files, {"ociVersion": "1.0.2"})
    text = asyncio.run(spec_text(Path(files[1])))
    assert text == Path(files[1]).read_bytes() and json.loads(text or b"") == {"ociVersion": "1.0.2"} and not reads
    write_spec(files, {"ociVersion": "1.0.2", "annotations": {"ip": "10.0.0.2"}})  # the pod's last step
    assert json.loads(asyncio.run(spec_text(Path(files[1]))) or b"")["annotations"] == {"ip": "10.0.0.2"}
    assert not reads


def test_past_the_newest_a_spec_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    read = spec_files._read
    monkeypatch.setattr(spec_files, "_read", lambda p: reads.append(p) or read(p))
    first = _files(tmp_path, "first")
    write_spec(first, {"n": 0})
    for i in range(WRITTEN_KEPT):
        write_spec(_files(tmp_path, f"c{i}"), {"n": i + 1})
    assert json.loads(asyncio.run(spec_text(Path(first[1]))) or b"") == {"n": 0}
    assert reads == [Path(first[1])]
    assert len(spec_files._written) <= WRITTEN_KEPT
    assert asyncio.run(spec_text(tmp_path / "none" / "config.json")) is None


def test_an_undone_spec_is_gone_from_memory_too(tmp_path: Path) -> None:
    class Spec(spec_files.WriteSpec):  # type: ignore[type-arg]
        def files(self, ctx: object) -> list[str]:
            return []

        def build(self, ctx: object) -> dict[str, object]:
            return {}

    files = _files(tmp_path, "b")
    write_spec(files, {"n": 1})
    asyncio.run(Spec.undo(Spec.__new__(Spec), {"files": files}))
    assert asyncio.run(spec_text(Path(files[1]))) is None


def test_only_the_copys_data_is_synced_its_dir_by_the_record_after_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle is not synced at all (the runroot is gone after a reboot); the
    state dir copy's data is, but not its dir: the record written after it
    there syncs that dir, and so the copy's rename with its own."""
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    files = _files(tmp_path, "c")
    write_spec(files, {"ociVersion": "1.0.2"})
    state_dir = str(tmp_path / "state" / "c")
    assert len(synced) == 1 and synced[0].startswith(state_dir + "/.config.json.")  # the copy's temp file
    write_record(Path(state_dir) / "state.json", CONTAINER_FORMAT, _container())
    assert synced[1].startswith(state_dir + "/.state.json.") and synced[2:] == [state_dir]
