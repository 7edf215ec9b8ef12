"""The container spec's rules, without a host: command and args over the
image's entrypoint and cmd, env merging, users and groups from the image's
files, capability adds and drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from podrt.container.model import ContainerConfig
from podrt.container.spec import capabilities, environment, process_args, resolve_user
from podrt.errors import InvalidArgument
from podrt.oci.spec import DEFAULT_CAPABILITIES

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["--default"], "Env": ["PATH=/image/bin", "A=image", "B=image"]}


@pytest.mark.parametrize("command, args, expected", [
    ((), (), ("/entry", "--default")),  # neither: entrypoint + cmd
    ((), ("--mine",), ("/entry", "--mine")),  # args replace cmd only
    (("/bin/app",), (), ("/bin/app",)),  # command replaces entrypoint, and the image's cmd goes with it
    (("/bin/app",), ("-v",), ("/bin/app", "-v")),
])
def test_command_and_args_over_the_image(command: tuple[str, ...], args: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert process_args(ContainerConfig(name="c", command=command, args=args), IMAGE) == expected


def test_environment_request_wins_and_hostname_is_set() -> None:
    env = environment(ContainerConfig(name="c", envs=(("B", "request"), ("C", "new"))), IMAGE, "pod-host")
    assert env == ("PATH=/image/bin", "A=image", "B=request", "HOSTNAME=pod-host", "C=new")
    assert environment(ContainerConfig(name="c"), {}, "")[0].startswith("PATH=/usr/local/sbin")  # a PATH always


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app\nvideo:x:44:other,app\n")
    return tmp_path


@pytest.mark.parametrize("cfg, image_user, expected", [
    (ContainerConfig(name="c"), "", (0, 0, ())),
    (ContainerConfig(name="c"), "app", (1000, 1000, (10, 44))),
    (ContainerConfig(name="c"), "1000:44", (1000, 44, (10,))),  # the primary group is not repeated
    (ContainerConfig(name="c"), "app:wheel", (1000, 10, (44,))),
    (ContainerConfig(name="c", run_as_user=1000), "root", (1000, 1000, (10, 44))),  # the request over the image
    (ContainerConfig(name="c", run_as_user=5, run_as_group=6, supplemental_groups=(7,)), "", (5, 6, (7,))),
    (ContainerConfig(name="c", run_as_username="app", supplemental_groups=(99,)), "", (1000, 1000, (99, 10, 44))),
])
def test_users_and_groups(rootfs: Path, cfg: ContainerConfig, image_user: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert resolve_user(cfg, {"User": image_user}, rootfs) == expected


def test_unknown_names_are_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="user 'ghost'"):
        resolve_user(ContainerConfig(name="c", run_as_username="ghost"), {}, rootfs)
    with pytest.raises(InvalidArgument, match="group 'nope'"):
        resolve_user(ContainerConfig(name="c"), {"User": "app:nope"}, rootfs)


def test_an_etc_passwd_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").symlink_to("/etc/passwd")  # would read the host's
    with pytest.raises(InvalidArgument):
        resolve_user(ContainerConfig(name="c", run_as_username="root"), {}, tmp_path)


def test_capabilities_adds_drops_and_all() -> None:
    assert set(capabilities(ContainerConfig(name="c"))) == set(DEFAULT_CAPABILITIES)
    assert capabilities(ContainerConfig(name="c", drop_capabilities=("ALL",), add_capabilities=("net_bind_service",))) == (
        "CAP_NET_BIND_SERVICE",)
    with_admin = capabilities(ContainerConfig(name="c", add_capabilities=("CAP_SYS_ADMIN",), drop_capabilities=("KILL",)))
    assert "CAP_SYS_ADMIN" in with_admin and "CAP_KILL" not in with_admin
    with pytest.raises(InvalidArgument, match="CAP_BOGUS"):
        capabilities(ContainerConfig(name="c", add_capabilities=("BOGUS",)))
