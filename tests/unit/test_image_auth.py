"""The global auth file (docker config.json) and PullImage's AuthConfig forms."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from podrt.api.runtime import v1 as cri
from podrt.config import ConfigError
from podrt.cri.image import credentials
from podrt.errors import InvalidArgument
from podrt.images import auth
from podrt.images.registry import Credentials


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_file_forms(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {
        "127.0.0.1:5000": {"auth": _b64("alice:s3cret")},
        "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
        "https://registry.example/v2/": {"identitytoken": "refresh-me"},
    }}))
    assert auth.for_host(str(path), "127.0.0.1:5000") == Credentials("alice", "s3cret")
    assert auth.for_host(str(path), "docker.io") == Credentials("bob", "pw")
    assert auth.for_host(str(path), "registry.example") == Credentials(identity_token="refresh-me")
    assert auth.for_host(str(path), "other.example") == Credentials()
    assert auth.for_host("", "127.0.0.1:5000") == Credentials()  # unset
    assert auth.for_host(str(tmp_path / "absent.json"), "x") == Credentials()


def test_broken_auth_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot read the auth file") as err:
        auth.load(path)
    assert "\n" not in str(err.value)


def test_auth_config_forms() -> None:
    assert credentials(None) is None
    assert credentials(cri.AuthConfig(username="u", password="p")) == Credentials("u", "p")
    assert credentials(cri.AuthConfig(auth=_b64("u:p:with:colons"))) == Credentials("u", "p:with:colons")
    assert credentials(cri.AuthConfig(identity_token="t")) == Credentials(identity_token="t")
    assert credentials(cri.AuthConfig(registry_token="r")) == Credentials(registry_token="r")


@pytest.mark.parametrize("auth, fragment", [
    (cri.AuthConfig(username="robot:ci", password="p"), "auth.username must not contain ':'"),
    (cri.AuthConfig(username="u\n", password="p"), "auth.username must not contain control characters"),
    (cri.AuthConfig(registry_token="tok\n"), "auth.registry_token must not contain control"),
    (cri.AuthConfig(identity_token="a\rb"), "auth.identity_token must not contain control"),
])
def test_credentials_a_header_cannot_carry_are_refused(auth: cri.AuthConfig, fragment: str) -> None:
    """aiohttp would raise ValueError on them once the registry asks for auth: INTERNAL before."""
    with pytest.raises(InvalidArgument, match=fragment):
        credentials(auth)


def test_auth_beside_a_username(tmp_path: Path) -> None:
    """Both forms given: config.json's `auth` wins (as docker reads it), AuthConfig's username (as containerd)."""
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"r.example": {"auth": _b64("alice:s3cret"), "username": "bob",
                                                        "password": "pw"}}}))
    assert auth.for_host(str(path), "r.example") == Credentials("alice", "s3cret")
    both = cri.AuthConfig(auth=_b64("alice:s3cret"), username="bob", password="pw")
    assert credentials(both) == Credentials("bob", "pw")


def test_auth_that_is_not_base64_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not base64"):
        credentials(cri.AuthConfig(auth="not base64!"))
