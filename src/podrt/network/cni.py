"""Run the CNI plugins of a network config list for a pod, the way libcni does.

ADD runs the plugins in order, feeding each the previous one's result, caches
the final result, and is all-or-nothing: when a plugin fails half-way, DEL runs
for the whole list before the error is raised, so no IP lease, veth or iptables
rule is left behind. DEL runs in reverse order, is best-effort (every plugin
runs even if one fails) and idempotent, and works after the netns is gone, so
a sandbox can always be torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from podrt.host import proc
from podrt.host.fsutil import atomic_write
from podrt.network.cniconf import CniNetwork, network_from_raw

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")  # CNI spec


@attrs.frozen
class CniPodInfo:
    """Who the network is for; goes to plugins as CNI_CONTAINERID and CNI_ARGS."""

    namespace: str
    name: str
    uid: str
    sandbox_id: str


@attrs.frozen
class CniIP:
    address: str  # with prefix length, "10.0.0.2/24"
    gateway: str | None
    interface: str | None  # interface name from the result, if it said
    version: int  # 4 or 6

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


@attrs.frozen
class CniResult:
    ips: tuple[CniIP, ...]
    raw: dict[str, Any]

    @property
    def primary_ip(self) -> str:
        """The first IP as the plugins listed it, without prefix; "" if there is none."""
        return self.ips[0].ip if self.ips else ""

    @property
    def ip_addresses(self) -> list[str]:
        return [ip.ip for ip in self.ips]


class CniError(Exception):
    """A plugin failed; str() is one line naming command, plugin, network and CNI error."""

    def __init__(
        self,
        message: str,
        *,
        command: str = "",
        plugin: str = "",
        network: str = "",
        code: int | None = None,
        msg: str = "",
        details: str = "",
        failures: Sequence[CniError] = (),
    ) -> None:
        super().__init__(_one_line(message))
        self.command = command
        self.plugin = plugin
        self.network = network
        self.code = code
        self.msg = msg
        self.details = details
        self.failures = tuple(failures)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def parse_version(version: str) -> tuple[int, ...]:
    """ "0.4.0" -> (0, 4, 0); unparsable versions count as newest (libcni rejects them anyway)."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (99,)


def parse_result(raw: Mapping[str, Any]) -> CniResult:
    """Read the IPs of a CNI result: 0.3.x/0.4.0/1.x ("ips") or 0.1/0.2 ("ip4"/"ip6")."""
    ips: list[CniIP] = []
    if "ips" in raw:
        interfaces = raw.get("interfaces") or []
        for entry in raw.get("ips") or []:
            address = str(entry["address"])
            version = ipaddress.ip_interface(address).version  # 1.0.0 dropped "version"
            index = entry.get("interface")
            name = None
            if isinstance(index, int) and 0 <= index < len(interfaces):
                name = interfaces[index].get("name")
            ips.append(CniIP(address, entry.get("gateway"), name, version))
    else:
        for key in ("ip4", "ip6"):
            if raw.get(key):
                address = str(raw[key]["ip"])
                ips.append(CniIP(address, raw[key].get("gateway"), None, ipaddress.ip_interface(address).version))
    return CniResult(ips=tuple(ips), raw=dict(raw))


def cni_args(pod: CniPodInfo) -> str:
    """CNI_ARGS as kubelet-era runtimes pass it; IgnoreUnknown keeps strict plugins happy."""
    return (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
        f"K8S_POD_INFRA_CONTAINER_ID={pod.sandbox_id};K8S_POD_UID={pod.uid}"
    )


def plugin_config(
    network: CniNetwork,
    plugin: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None,
    capability_args: Mapping[str, Any],
) -> dict[str, Any]:
    """One plugin's stdin: its own config plus what libcni injects from the list.

    runtimeConfig gets only the capabilities the plugin declares true, so a
    plugin never sees data it did not ask for.
    """
    conf = dict(plugin)
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    if prev_result is not None and parse_version(network.cni_version) >= (0, 3, 0):
        conf["prevResult"] = dict(prev_result)
    declared = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in capability_args.items() if declared.get(k) is True}
    if runtime:
        conf["runtimeConfig"] = {**(plugin.get("runtimeConfig") or {}), **runtime}
    return conf


def plugin_error(
    command: str, plugin: str, network: str, returncode: int, stdout: bytes, stderr: bytes
) -> CniError:
    """Turn a failed run into a CniError, from the CNI error JSON on stdout if there is one."""
    where = f"CNI {command} failed: plugin {plugin} on network {network}"
    try:
        err = json.loads(stdout)
    except ValueError:
        err = None
    if isinstance(err, dict) and ("code" in err or "msg" in err):
        code = err.get("code")
        msg = str(err.get("msg", ""))
        details = str(err.get("details", "") or "")
        text = f"{where}: error {code}: {msg}" + (f" ({details})" if details else "")
        return CniError(text, command=command, plugin=plugin, network=network,
                        code=code if isinstance(code, int) else None, msg=msg, details=details)
    tail = (stderr or stdout).decode(errors="replace").strip()[-500:]
    return CniError(f"{where}: exit status {returncode}" + (f": {tail}" if tail else ""),
                    command=command, plugin=plugin, network=network, msg=_one_line(tail))


def netns_for_del(netns_path: str | None) -> str:
    """The netns path if it still holds a namespace, else "" (spec: plugins then clean up what they can)."""
    if not netns_path:
        return ""
    try:
        st = os.stat(netns_path)
    except OSError:
        return ""
    # All namespace inodes live on the one nsfs superblock: a leftover plain file doesn't.
    return netns_path if st.st_dev == os.stat("/proc/self/ns/net").st_dev else ""


def find_plugin(plugin_dirs: Sequence[str], plugin_type: str) -> str | None:
    """The first executable named plugin_type in plugin_dirs (libcni's FindInPath)."""
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        return None
    for directory in plugin_dirs:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class CniInvoker:
    """Runs plugins from plugin_dirs; caches ADD results in cache_dir for DEL."""

    def __init__(self, plugin_dirs: Sequence[str], cache_dir: Path, *, timeout: float = 60.0) -> None:
        self.plugin_dirs = tuple(str(d) for d in plugin_dirs)
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout

    def cache_path(self, network_name: str, sandbox_id: str, ifname: str) -> Path:
        return self.cache_dir / f"{network_name}-{sandbox_id}-{ifname}.json"

    async def add(
        self,
        network: CniNetwork,
        pod: CniPodInfo,
        netns_path: str,
        ifname: str = "eth0",
        port_mappings: Sequence[Mapping[str, Any]] = (),
    ) -> CniResult:
        """Attach the pod to the network; on failure or cancellation nothing stays behind."""
        _validate(network, pod, ifname)
        caps = _capability_args(port_mappings)
        prev: dict[str, Any] | None = None
        try:
            for plugin in network.plugins:
                out = await self._run("ADD", network, plugin, pod, netns_path, ifname, prev, caps)
                prev = out if out is not None else prev  # a silent plugin passes its input on
            if prev is None:
                raise CniError(f"CNI ADD on network {network.name}: no plugin returned a result",
                               command="ADD", network=network.name)
            try:
                result = parse_result(prev)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CniError(f"CNI ADD on network {network.name}: bad result: {exc}",
                               command="ADD", network=network.name) from exc
            record = {
                "kind": "cniCacheV1",
                "containerId": pod.sandbox_id,
                "ifName": ifname,
                "networkName": network.name,
                "cniArgs": cni_args(pod),
                "capabilityArgs": caps,
                "config": network.raw,
                "result": prev,
            }
            await asyncio.to_thread(_atomic_write_json, self.cache_path(network.name, pod.sandbox_id, ifname), record)
        except BaseException as exc:
            failures = await self._del_plugins(network, pod, netns_for_del(netns_path), ifname, prev, caps,
                                               missing_ok=True)
            if failures and isinstance(exc, CniError):
                rollback = "; ".join(str(f) for f in failures)
                raise CniError(f"{exc}; rollback DEL failed too: {rollback}", command=exc.command,
                               plugin=exc.plugin, network=exc.network, code=exc.code, msg=exc.msg,
                               details=exc.details, failures=failures) from exc
            for failure in failures:
                logger.warning("rollback after failed CNI ADD: %s", failure)
            raise
        return result

    async def delete(
        self,
        network: CniNetwork,
        pod: CniPodInfo,
        netns_path: str | None,
        ifname: str = "eth0",
        port_mappings: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Detach the pod; idempotent, and works when the netns is already gone.

        Without port_mappings, those cached by ADD are used: portmap removes its
        rules only when told the mappings again.
        """
        _validate(network, pod, ifname)
        path = self.cache_path(network.name, pod.sandbox_id, ifname)
        cached = await asyncio.to_thread(_read_cache, path)
        prev = cached.get("result") if parse_version(network.cni_version) >= (0, 4, 0) else None
        caps = _capability_args(port_mappings) or dict(cached.get("capabilityArgs") or {})
        failures = await self._del_plugins(network, pod, netns_for_del(netns_path), ifname, prev, caps)
        if failures:
            raise CniError(f"CNI DEL on network {network.name}: {len(failures)} plugin(s) failed: "
                           + "; ".join(str(f) for f in failures),
                           command="DEL", network=network.name, failures=failures)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, path)

    def cached_sandbox_ids(self) -> dict[str, Path]:
        """Sandbox ID -> cache file of every pod ADD left on record (for orphan release)."""
        out = {}
        for path in self.cache_dir.glob("*.json"):
            record = _read_cache(path)
            if isinstance(record.get("containerId"), str):
                out[record["containerId"]] = path
        return out

    async def delete_cached(self, path: Path) -> None:
        """DEL a pod from its cache record alone: its pod is gone, its IP must be freed."""
        record = await asyncio.to_thread(_read_cache, path)
        args = dict(kv.split("=", 1) for kv in str(record.get("cniArgs", "")).split(";") if "=" in kv)
        pod = CniPodInfo(args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", ""),
                         args.get("K8S_POD_UID", ""), str(record["containerId"]))
        network = network_from_raw(record["config"], path)
        await self.delete(network, pod, None, str(record.get("ifName", "eth0")))

    async def _del_plugins(
        self,
        network: CniNetwork,
        pod: CniPodInfo,
        netns: str,
        ifname: str,
        prev: Mapping[str, Any] | None,
        caps: Mapping[str, Any],
        *,
        missing_ok: bool = False,
    ) -> list[CniError]:
        """DEL every plugin, last first, carrying on past failures; return them."""
        failures = []
        for plugin in reversed(network.plugins):
            if missing_ok and self._find(plugin["type"]) is None:
                continue  # rolling back an ADD: a plugin that isn't there did nothing
            try:
                await self._run("DEL", network, plugin, pod, netns, ifname, prev, caps)
            except CniError as exc:
                failures.append(exc)
        return failures

    def _find(self, plugin_type: str) -> str | None:
        return find_plugin(self.plugin_dirs, plugin_type)

    def _env(self, command: str, pod: CniPodInfo, netns: str, ifname: str) -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.sandbox_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": ":".join(self.plugin_dirs),
            "CNI_ARGS": cni_args(pod),
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,  # plugins exec iptables etc.
        }

    async def _run(
        self,
        command: str,
        network: CniNetwork,
        plugin: Mapping[str, Any],
        pod: CniPodInfo,
        netns: str,
        ifname: str,
        prev: Mapping[str, Any] | None,
        caps: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        """Run one plugin; return its parsed stdout for ADD (None if it printed nothing)."""
        ptype = str(plugin["type"])
        binary = self._find(ptype)
        if binary is None:
            raise CniError(f"CNI {command} failed: plugin {ptype} on network {network.name}: "
                           f"failed to find plugin {ptype!r} in path {list(self.plugin_dirs)}",
                           command=command, plugin=ptype, network=network.name)
        stdin = json.dumps(plugin_config(network, plugin, prev, caps)).encode()
        try:
            code, stdout, stderr = await proc.run([binary], stdin=stdin, env=self._env(command, pod, netns, ifname),
                                                  cwd="/", timeout=self.timeout)
        except TimeoutError:  # before OSError, of which it is a subclass
            raise CniError(f"CNI {command} failed: plugin {ptype} on network {network.name}: "
                           f"timed out after {self.timeout:g}s, killed",
                           command=command, plugin=ptype, network=network.name) from None
        except OSError as exc:  # the plugin could not be started
            raise CniError(f"CNI {command} failed: plugin {ptype} on network {network.name}: {exc}",
                           command=command, plugin=ptype, network=network.name) from exc
        if stderr:
            logger.debug("CNI %s %s stderr: %s", command, ptype, stderr.decode(errors="replace").strip())
        if code != 0:
            raise plugin_error(command, ptype, network.name, code, stdout, stderr)
        if command != "ADD" or not stdout.strip():
            return None
        try:
            out = json.loads(stdout)
        except ValueError as exc:
            raise CniError(f"CNI ADD failed: plugin {ptype} on network {network.name}: result is not JSON: {exc}",
                           command=command, plugin=ptype, network=network.name) from exc
        if not isinstance(out, dict):
            raise CniError(f"CNI ADD failed: plugin {ptype} on network {network.name}: result is not an object",
                           command=command, plugin=ptype, network=network.name)
        return out


def _capability_args(port_mappings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"portMappings": [dict(m) for m in port_mappings]} if port_mappings else {}


def _validate(network: CniNetwork, pod: CniPodInfo, ifname: str) -> None:
    """Reject what would break the cache file name or that the spec forbids."""
    if not _CONTAINER_ID.match(pod.sandbox_id):
        raise ValueError(f"invalid sandbox id for CNI: {pod.sandbox_id!r}")
    if not ifname or len(ifname) > 15 or ifname in (".", "..") or any(c in ifname for c in "/: \t\n"):
        raise ValueError(f"invalid interface name for CNI: {ifname!r}")
    if "/" in network.name:
        raise ValueError(f"invalid network name for CNI cache: {network.name!r}")


def _atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """DEL never reads a half-written cache."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, json.dumps(payload).encode())


def _read_cache(path: Path) -> dict[str, Any]:
    """The cached ADD record, or {} when missing or unreadable (DEL must still go on)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable CNI cache %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}
