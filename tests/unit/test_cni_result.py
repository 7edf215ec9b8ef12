"""CNI invocation without root: result parsing, stdin/env building, errors, and
the ADD/DEL protocol against fake plugins (scripts that record what they got)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from podrt.host.procfs import pid_running
from podrt.network.cni import (
    CniError,
    CniInvoker,
    CniPodInfo,
    cni_args,
    parse_result,
    plugin_config,
    plugin_error,
)
from podrt.network.cniconf import CniNetwork

POD = CniPodInfo(namespace="default", name="web-0", uid="1234-abcd", sandbox_id="0123456789abcdef")

RESULT_040 = {
    "cniVersion": "0.4.0",
    "interfaces": [
        {"name": "podrtcni0", "mac": "aa:aa:aa:aa:aa:aa"},
        {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
        {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/podrt/netns/x"},
    ],
    "ips": [
        {"version": "4", "address": "10.233.96.5/24", "gateway": "10.233.96.1", "interface": 2},
        {"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
    ],
    "dns": {},
}


def network(plugins: list[dict[str, Any]], version: str = "1.0.0", name: str = "testnet") -> CniNetwork:
    raw = {"cniVersion": version, "name": name, "plugins": plugins}
    return CniNetwork(name=name, cni_version=version, plugins=tuple(plugins), path=Path("/dev/null"), raw=raw)


def test_parse_result_040() -> None:
    result = parse_result(RESULT_040)
    assert [(ip.address, ip.gateway, ip.interface, ip.version) for ip in result.ips] == [
        ("10.233.96.5/24", "10.233.96.1", "eth0", 4),
        ("fd00::5/64", "fd00::1", "eth0", 6),
    ]
    assert result.primary_ip == "10.233.96.5"
    assert result.ip_addresses == ["10.233.96.5", "fd00::5"]
    assert result.raw == RESULT_040


def test_parse_result_100_has_no_version_field() -> None:
    raw = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "fd00::7/64", "interface": 0}, {"address": "10.1.2.3/16"}],
    }
    result = parse_result(raw)
    assert [(ip.version, ip.interface, ip.gateway) for ip in result.ips] == [(6, "eth0", None), (4, None, None)]
    assert result.primary_ip == "fd00::7"


def test_parse_result_020_and_empty() -> None:
    result = parse_result({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"}})
    assert result.ip_addresses == ["10.0.0.2"] and result.ips[0].gateway == "10.0.0.1"
    assert parse_result({"cniVersion": "1.0.0"}).primary_ip == ""


def test_parse_result_rejects_bad_address() -> None:
    with pytest.raises(ValueError):
        parse_result({"ips": [{"address": "not-an-ip"}]})


def test_cni_args_format() -> None:
    assert cni_args(POD) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
        "K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=1234-abcd"
    )


def test_plugin_config_injects_name_version_prev_result() -> None:
    plugin = {"type": "bridge", "bridge": "br0", "name": "ignored", "cniVersion": "0.1.0"}
    net = network([plugin])
    first = plugin_config(net, plugin, None, {})
    assert first == {"type": "bridge", "bridge": "br0", "name": "testnet", "cniVersion": "1.0.0"}
    chained = plugin_config(net, plugin, RESULT_040, {})
    assert chained["prevResult"] == RESULT_040
    assert plugin == {"type": "bridge", "bridge": "br0", "name": "ignored", "cniVersion": "0.1.0"}  # not mutated


def test_plugin_config_no_prev_result_before_030() -> None:
    plugin = {"type": "bridge"}
    assert "prevResult" not in plugin_config(network([plugin], version="0.2.0"), plugin, RESULT_040, {})


def test_runtime_config_only_for_declared_capabilities() -> None:
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    caps = {"portMappings": mappings, "bandwidth": {"ingressRate": 1}}
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "runtimeConfig": {"keep": 1}}
    declined = {"type": "portmap", "capabilities": {"portMappings": False}}
    bridge = {"type": "bridge"}
    net = network([bridge, portmap])
    assert plugin_config(net, portmap, None, caps)["runtimeConfig"] == {"keep": 1, "portMappings": mappings}
    assert "runtimeConfig" not in plugin_config(net, bridge, None, caps)
    assert "runtimeConfig" not in plugin_config(net, declined, None, caps)
    no_mappings = {"type": "portmap", "capabilities": {"portMappings": True}}
    assert "runtimeConfig" not in plugin_config(net, no_mappings, None, {})


def test_plugin_error_from_cni_json_is_one_line() -> None:
    stdout = json.dumps({"cniVersion": "1.0.0", "code": 11, "msg": "failed to allocate\nfor range 0",
                         "details": "no IP addresses available\nin range set"}).encode()
    err = plugin_error("ADD", "host-local", "testnet", 1, stdout, b"noise\n")
    assert "\n" not in str(err)
    assert str(err) == ("CNI ADD failed: plugin host-local on network testnet: error 11: failed to allocate "
                        "for range 0 (no IP addresses available in range set)")
    assert (err.code, err.plugin, err.network, err.command) == (11, "host-local", "testnet", "ADD")


def test_plugin_error_without_json_uses_stderr() -> None:
    err = plugin_error("DEL", "bridge", "testnet", 2, b"", b"panic: boom\ngoroutine 1\n")
    assert str(err) == "CNI DEL failed: plugin bridge on network testnet: exit status 2: panic: boom goroutine 1"
    assert err.code is None


# --- the protocol, against fake plugins -------------------------------------------------

FAKE_PLUGIN = textwrap.dedent(
    """\
    #!{python}
    import json, os, signal, sys, time
    conf = json.load(sys.stdin)
    if conf.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if conf.get("holder_pidfile") and os.fork() == 0:  # a helper that keeps our stdout open
        with open(conf["holder_pidfile"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(300)
        os._exit(0)
    env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_") or k == "PATH"}}
    with open(conf["log"], "a") as f:
        f.write(json.dumps({{"type": conf["type"], "env": env, "conf": conf}}) + "\\n")
    cmd = env["CNI_COMMAND"]
    if conf.get("sleep_on") == cmd:
        time.sleep(60)
    if conf.get("fail_on") == cmd:
        print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 7, "msg": "fake failure", "details": conf["type"]}}))
        sys.exit(1)
    if cmd == "ADD":
        prev = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}}
        prev = json.loads(json.dumps(prev))
        prev["interfaces"].append({{"name": os.environ["CNI_IFNAME"], "sandbox": os.environ["CNI_NETNS"]}})
        if conf.get("ip"):
            prev["ips"].append({{"address": conf["ip"], "interface": len(prev["interfaces"]) - 1}})
        print(json.dumps(prev))
    """
)


@pytest.fixture
def fake(tmp_path: Path) -> tuple[CniInvoker, Path]:
    """Plugins 'a', 'b', 'c', 'slow' in a second plugin dir; calls are logged to log.jsonl."""
    empty, plugins = tmp_path / "empty", tmp_path / "plugins"
    empty.mkdir()
    plugins.mkdir()
    for name in ("a", "b", "c", "slow"):
        script = plugins / name
        script.write_text(FAKE_PLUGIN.format(python=sys.executable))
        script.chmod(0o755)
    return CniInvoker([str(empty), str(plugins)], tmp_path / "cache", timeout=5.0), tmp_path / "log.jsonl"


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def fake_network(log: Path, *plugins: dict[str, Any]) -> CniNetwork:
    return network([{"log": str(log), **p} for p in plugins], name="fakenet")


async def test_add_chains_results_and_del_reverses(fake: tuple[CniInvoker, Path], tmp_path: Path) -> None:
    invoker, log = fake
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    net = fake_network(log, {"type": "a", "ip": "10.233.96.9/24"}, {"type": "b", "capabilities": {"portMappings": True}})
    result = await invoker.add(net, POD, "/run/netns/x", port_mappings=mappings)
    assert result.primary_ip == "10.233.96.9"
    a, b = calls(log)
    assert [a["type"], b["type"]] == ["a", "b"]
    assert a["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": POD.sandbox_id,
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{tmp_path / 'empty'}:{tmp_path / 'plugins'}",
        "CNI_ARGS": cni_args(POD),
        "PATH": a["env"]["PATH"],
    }
    assert "prevResult" not in a["conf"] and "runtimeConfig" not in a["conf"]
    assert b["conf"]["prevResult"]["ips"] == [{"address": "10.233.96.9/24", "interface": 0}]
    assert b["conf"]["runtimeConfig"] == {"portMappings": mappings}
    cache = invoker.cache_path("fakenet", POD.sandbox_id, "eth0")
    assert cache == tmp_path / "cache" / f"fakenet-{POD.sandbox_id}-eth0.json"
    assert json.loads(cache.read_text())["result"] == result.raw

    log.unlink()
    await invoker.delete(net, POD, None)  # no mappings given: the cached ones are used
    b_del, a_del = calls(log)
    assert [b_del["type"], a_del["type"]] == ["b", "a"]
    assert b_del["env"]["CNI_NETNS"] == ""  # gone/None netns -> empty, per spec
    assert b_del["conf"]["prevResult"] == result.raw == a_del["conf"]["prevResult"]
    assert b_del["conf"]["runtimeConfig"] == {"portMappings": mappings}
    assert not cache.exists()

    log.unlink()
    await invoker.delete(net, POD, None)  # idempotent: no cache, so no prevResult
    assert [c["type"] for c in calls(log)] == ["b", "a"]
    assert all("prevResult" not in c["conf"] for c in calls(log))


async def test_add_failure_rolls_back_whole_list(fake: tuple[CniInvoker, Path]) -> None:
    invoker, log = fake
    net = fake_network(log, {"type": "a", "ip": "10.233.96.9/24"}, {"type": "b", "fail_on": "ADD"}, {"type": "c"})
    with pytest.raises(CniError) as info:
        await invoker.add(net, POD, "/run/netns/x")
    assert str(info.value) == "CNI ADD failed: plugin b on network fakenet: error 7: fake failure (b)"
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls(log)] == [
        ("a", "ADD"), ("b", "ADD"), ("c", "DEL"), ("b", "DEL"), ("a", "DEL"),
    ]
    assert not invoker.cache_path("fakenet", POD.sandbox_id, "eth0").exists()


async def test_missing_plugin_names_dirs_and_rolls_back(fake: tuple[CniInvoker, Path], tmp_path: Path) -> None:
    invoker, log = fake
    net = fake_network(log, {"type": "a"}, {"type": "nope"})
    with pytest.raises(CniError, match=r"failed to find plugin 'nope' in path .*empty.*plugins") as info:
        await invoker.add(net, POD, "/run/netns/x")
    assert "rollback" not in str(info.value)
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls(log)] == [("a", "ADD"), ("a", "DEL")]


async def test_del_continues_past_failures_and_keeps_cache(fake: tuple[CniInvoker, Path]) -> None:
    invoker, log = fake
    net = fake_network(log, {"type": "a", "fail_on": "DEL"}, {"type": "b"}, {"type": "c", "fail_on": "DEL"})
    await invoker.add(net, POD, "/run/netns/x")
    with pytest.raises(CniError) as info:
        await invoker.delete(net, POD, "/run/netns/x")
    err = info.value
    assert [f.plugin for f in err.failures] == ["c", "a"]
    assert "2 plugin(s) failed" in str(err) and "\n" not in str(err)
    assert [c["type"] for c in calls(log) if c["env"]["CNI_COMMAND"] == "DEL"] == ["c", "b", "a"]
    assert invoker.cache_path("fakenet", POD.sandbox_id, "eth0").exists()  # kept for the retry


async def test_timeout_kills_plugin(fake: tuple[CniInvoker, Path], tmp_path: Path) -> None:
    invoker, log = fake
    invoker.timeout = 1.0
    net = fake_network(log, {"type": "slow", "sleep_on": "ADD"})
    with pytest.raises(CniError, match="plugin slow on network fakenet: timed out after 1s, killed"):
        await invoker.add(net, POD, "/run/netns/x")
    assert [c["env"]["CNI_COMMAND"] for c in calls(log)] == ["ADD", "DEL"]
    assert _running(str(tmp_path / "plugins" / "slow")) == []  # killed and reaped, not left running


def _dies(pid: int) -> bool:
    """SIGKILL is delivered when the process next runs: on a loaded host /proc
    may show it alive for a moment after kill() returned."""
    deadline = time.monotonic() + 5
    while pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _holder(pidfile: Path) -> int:
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text():
            return int(pidfile.read_text())
        time.sleep(0.02)
    raise AssertionError("the helper never started")


async def test_helper_holding_stdout_does_not_hang_a_finished_plugin(fake: tuple[CniInvoker, Path], tmp_path: Path) -> None:
    """The plugin answered and exited; its helper keeps stdout open for 300 s.
    The ADD returns after the bounded pipe wait and the helper is killed."""
    invoker, log = fake
    pidfile = tmp_path / "holder.pid"
    net = fake_network(log, {"type": "a", "ip": "10.233.96.9/24", "holder_pidfile": str(pidfile)})
    started = time.monotonic()
    result = await invoker.add(net, POD, "/run/netns/x")
    assert result.primary_ip == "10.233.96.9"
    assert time.monotonic() - started < 30  # not the helper's 300 s
    assert _dies(_holder(pidfile))


async def test_timeout_kills_the_plugins_whole_group(fake: tuple[CniInvoker, Path], tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    invoker, log = fake
    invoker.timeout = 1.0
    pidfile = tmp_path / "holder.pid"
    net = fake_network(log, {"type": "slow", "sleep_on": "ADD", "holder_pidfile": str(pidfile)})
    started = time.monotonic()
    with pytest.raises(CniError, match="timed out after 1s"):
        await invoker.add(net, POD, "/run/netns/x")
    assert time.monotonic() - started < 30
    assert _dies(_holder(pidfile))
    assert _running(str(tmp_path / "plugins" / "slow")) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(tmp_path / "plugins" / "slow") in w and "1s timeout" in w for w in warnings), warnings


async def test_timeout_kills_a_plugin_that_ignores_sigterm(fake: tuple[CniInvoker, Path], tmp_path: Path) -> None:
    invoker, log = fake
    invoker.timeout = 1.0
    net = fake_network(log, {"type": "slow", "sleep_on": "ADD", "ignore_term": True})
    with pytest.raises(CniError, match="timed out after 1s"):
        await invoker.add(net, POD, "/run/netns/x")
    assert _running(str(tmp_path / "plugins" / "slow")) == []


async def test_cancelled_add_rolls_back(fake: tuple[CniInvoker, Path]) -> None:
    invoker, log = fake
    net = fake_network(log, {"type": "a", "ip": "10.233.96.9/24"}, {"type": "slow", "sleep_on": "ADD"})
    task = asyncio.ensure_future(invoker.add(net, POD, "/run/netns/x"))
    for _ in range(200):
        if len(calls(log)) == 2:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls(log)] == [
        ("a", "ADD"), ("slow", "ADD"), ("slow", "DEL"), ("a", "DEL"),
    ]
    assert calls(log)[2]["conf"]["prevResult"]["ips"][0]["address"] == "10.233.96.9/24"


def _running(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


async def test_invalid_ids_are_rejected(fake: tuple[CniInvoker, Path]) -> None:
    invoker, log = fake
    net = fake_network(log, {"type": "a"})
    with pytest.raises(ValueError):
        await invoker.add(net, CniPodInfo("ns", "n", "u", "../evil"), "/x")
    with pytest.raises(ValueError):
        await invoker.add(net, POD, "/x", ifname="eth0/../x")
    assert calls(log) == []
