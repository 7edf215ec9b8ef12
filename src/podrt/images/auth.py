"""Credentials from a docker config.json (`[podrt.image] global_auth_file`),
for pulls whose request carries none, as CRI-O's global_auth_file does.

Keys of "auths" are registry hosts (`host[:port]`), optionally as URLs;
Docker Hub's historic key `https://index.docker.io/v1/` stands for docker.io.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from podrt.config import ConfigError
from podrt.images.registry import Credentials

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")


def _host(key: str) -> str:
    host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
    return "docker.io" if key in _HUB_KEYS or host in _HUB_KEYS else host


def load(path: Path) -> dict[str, Credentials]:
    """host -> credentials; an absent file is no credentials, a broken one a ConfigError."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the auth file: {exc}") from None
    out: dict[str, Credentials] = {}
    for key, entry in (doc.get("auths") or {}).items() if isinstance(doc, dict) else ():
        if not isinstance(entry, dict):
            continue
        out[_host(key)] = Credentials.from_docker(
            entry.get("auth") or "", str(entry.get("username", "")), str(entry.get("password", "")),
            str(entry.get("identitytoken", "")), str(entry.get("registrytoken", "")))
    return out


def for_host(path_text: str, host: str) -> Credentials:
    """What the global auth file holds for `host` (none when unset or absent)."""
    return load(Path(path_text)).get(host, Credentials()) if path_text else Credentials()
