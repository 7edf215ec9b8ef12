"""The default pod network: written only into an empty CNI dir, on a subnet the host does not use."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from podrt.network import default
from podrt.network.cniconf import find_network

net = ipaddress.ip_network


def test_installs_a_valid_network_on_the_first_free_subnet(tmp_path: Path) -> None:
    message = default.install(tmp_path / "net.d", used=[net("10.85.0.0/16"), net("192.0.2.0/24")])
    assert "installed the default pod network podrt (bridge podrt0, 10.86.0.0/16)" in message
    lookup = find_network(tmp_path / "net.d")
    assert lookup.network is not None and lookup.network.name == "podrt"
    assert lookup.network.plugin_types == ["bridge", "portmap"]
    assert default.default_subnet(lookup.network) == net("10.86.0.0/16")


def test_never_touches_an_existing_config(tmp_path: Path) -> None:
    cni = tmp_path / "net.d"
    cni.mkdir()
    mine = cni / "99-mine.conf"
    mine.write_text("{not even valid json")  # present is enough: the operator's business
    message = default.install(cni, used=[])
    assert message.startswith("kept the CNI config") and "99-mine.conf" in message
    assert sorted(p.name for p in cni.iterdir()) == ["99-mine.conf"]


def test_subnet_choice_avoids_overlaps() -> None:
    assert default.pick_subnet([net("10.0.0.0/10"), net("192.168.0.0/16")]) == net("10.85.0.0/16")
    used = [net("10.85.3.0/24"), net("10.86.0.0/15")]
    assert default.pick_subnet(used) == net("10.89.0.0/16")
    with pytest.raises(RuntimeError, match="overlaps a host network"):
        default.pick_subnet([net("10.0.0.0/8")])


def test_other_networks_are_not_checked(tmp_path: Path) -> None:
    (tmp_path / "10-other.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "loopback"}]}))
    assert default.check(tmp_path) is None


def test_host_networks_reads_netlink() -> None:
    assert any(n.overlaps(net("127.0.0.0/8")) for n in default.host_networks())
