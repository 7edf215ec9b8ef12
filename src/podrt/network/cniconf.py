"""Find the CNI network podrt uses: the first config file in the config dir.

Follows libcni's ConfFiles/LoadConfList rules (as CRI-O and containerd do):
files ending in .conf, .conflist or .json, sorted by name, the first one that
parses wins; a single-plugin .conf is wrapped into a one-plugin list.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

CONF_SUFFIXES = (".conf", ".conflist", ".json")


@attrs.frozen
class CniNetwork:
    """A parsed network config list."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    path: Path
    raw: dict[str, Any]

    @property
    def plugin_types(self) -> list[str]:
        return [p["type"] for p in self.plugins]


@attrs.frozen
class CniLookup:
    """The outcome of a search: a network, or why there is none."""

    network: CniNetwork | None
    reason: str = ""
    message: str = ""


def _parse(path: Path) -> CniNetwork:
    return network_from_raw(json.loads(path.read_text()), path)


def network_from_raw(raw: Any, path: Path) -> CniNetwork:
    """Also used to rebuild the exact network a pod was added to (for its DEL)."""
    if not isinstance(raw, dict):
        raise ValueError("top level is not a JSON object")
    if "plugins" in raw:
        plugins = raw["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise ValueError('"plugins" must be a non-empty list')
    elif "type" in raw:
        plugins = [raw]
    else:
        raise ValueError('neither "plugins" nor "type" is set')
    for plugin in plugins:
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            raise ValueError('every plugin needs a string "type"')
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError('"name" must be a non-empty string')
    return CniNetwork(
        name=name,
        cni_version=str(raw.get("cniVersion", "0.4.0")),
        plugins=tuple(plugins),
        path=path,
        raw=raw,
    )


def network_finder(config: Any) -> Callable[[], CniLookup]:
    """find_network bound to a podrt Config's network_dir (what the daemon's parts share)."""
    conf_dir = Path(config.network.network_dir)
    return lambda: find_network(conf_dir)


def find_network(conf_dir: Path) -> CniLookup:
    """Return the default network from conf_dir, or the reason none is usable."""
    try:
        candidates = sorted(
            p for p in conf_dir.iterdir() if p.suffix in CONF_SUFFIXES and p.is_file()
        )
    except FileNotFoundError:
        candidates = []
    problems = []
    for path in candidates:
        try:
            return CniLookup(network=_parse(path))
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            problems.append(f"{path.name}: {exc}")
    message = f"no valid CNI network config found in {conf_dir}"
    if problems:
        message += " (" + "; ".join(problems) + ")"
    return CniLookup(network=None, reason="NetworkPluginNotReady", message=message)
