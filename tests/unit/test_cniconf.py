"""CNI config discovery follows libcni's rules."""

from __future__ import annotations

import json
from pathlib import Path

from podrt.network.cniconf import find_network


def test_missing_dir_is_not_ready(tmp_path: Path) -> None:
    lookup = find_network(tmp_path / "absent")
    assert lookup.network is None
    assert lookup.reason == "NetworkPluginNotReady"
    assert str(tmp_path / "absent") in lookup.message


def test_first_valid_file_by_name_wins(tmp_path: Path) -> None:
    (tmp_path / "20-b.conflist").write_text(json.dumps({"name": "b", "cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}))
    (tmp_path / "10-a.conflist").write_text("{not json")
    (tmp_path / "05-ignored.txt").write_text(json.dumps({"name": "x", "type": "bridge"}))
    lookup = find_network(tmp_path)
    assert lookup.network is not None
    assert lookup.network.name == "b"
    assert lookup.network.plugin_types == ["bridge"]


def test_single_plugin_conf_is_wrapped(tmp_path: Path) -> None:
    (tmp_path / "10-one.conf").write_text(json.dumps({"name": "one", "cniVersion": "0.4.0", "type": "bridge", "bridge": "x0"}))
    lookup = find_network(tmp_path)
    assert lookup.network is not None
    assert lookup.network.plugin_types == ["bridge"]
    assert lookup.network.cni_version == "0.4.0"


def test_only_invalid_files_explain_why(tmp_path: Path) -> None:
    (tmp_path / "10-a.conflist").write_text(json.dumps({"name": "a", "plugins": []}))
    (tmp_path / "20-b.conf").write_text(json.dumps({"type": "bridge"}))
    lookup = find_network(tmp_path)
    assert lookup.network is None
    assert "10-a.conflist" in lookup.message and "plugins" in lookup.message
    assert "20-b.conf" in lookup.message and "name" in lookup.message
