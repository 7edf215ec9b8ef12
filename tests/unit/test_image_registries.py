"""registries.conf v2 and certs.d: where a pull goes, per containers/image's rules."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from podrt.config import ConfigError
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.images.registries import (
    CertsD,
    Endpoint,
    RegistriesConf,
    Registry,
    TlsFiles,
    load,
    resolve,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str, **dropins: str) -> RegistriesConf:
    main = write(tmp_path / "registries.conf", text)
    for name, body in dropins.items():
        write(tmp_path / "registries.conf.d" / f"{name}.conf", body)
    return load(main, None)


def hosts(endpoints: list[Endpoint]) -> list[str]:
    return [f"{e.registry_host}/{e.repository}" for e in endpoints]


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, text)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "registries.conf") + ": ")
    return message


MIRRORED = """
    [[registry]]
    prefix = "registry.example"
    location = "registry.example"

    [[registry.mirror]]
    location = "mirror.example:5000"

    [[registry.mirror]]
    location = "127.0.0.1:5000/cache"
    insecure = true
"""


# ------------------------------------------------------------- no config

def test_absent_main_file_and_dropins_give_an_empty_conf(tmp_path: Path) -> None:
    conf = load(tmp_path / "absent.conf", None)
    assert conf == RegistriesConf()
    assert resolve(conf, "docker.io/library/busybox", by_digest=False) == [
        Endpoint("docker.io", "library/busybox", insecure=False, mirror=False)]


def test_dropins_are_read_when_the_main_file_is_absent(tmp_path: Path) -> None:
    write(tmp_path / "registries.conf.d" / "10-a.conf", 'unqualified-search-registries = ["registry.example"]\n')
    conf = load(tmp_path / "registries.conf", None)
    assert conf.search_registries == ("registry.example",)
    assert conf.files == (tmp_path / "registries.conf.d" / "10-a.conf",)


def test_name_without_matching_entry_goes_to_its_own_host(tmp_path: Path) -> None:
    conf = load_text(tmp_path, MIRRORED)
    assert resolve(conf, "other.example:5000/team/app", by_digest=True) == [
        Endpoint("other.example:5000", "team/app", insecure=False, mirror=False)]


# ---------------------------------------------------------------- mirrors

def test_mirrors_come_first_in_file_order_then_the_location(tmp_path: Path) -> None:
    endpoints = resolve(load_text(tmp_path, MIRRORED), "registry.example/team/app", by_digest=False)
    assert endpoints == [
        Endpoint("mirror.example:5000", "team/app", insecure=False, mirror=True),
        Endpoint("127.0.0.1:5000", "cache/team/app", insecure=True, mirror=True),
        Endpoint("registry.example", "team/app", insecure=False, mirror=False),
    ]


@pytest.mark.parametrize(("by_digest", "expected"), [
    (False, ["all.example/app", "tag.example/app", "registry.example/app"]),
    (True, ["all.example/app", "digest.example/app", "registry.example/app"]),
])
def test_pull_from_mirror_filters_by_kind_of_pull(tmp_path: Path, by_digest: bool, expected: list[str]) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        location = "registry.example"
        [[registry.mirror]]
        location = "all.example"
        pull-from-mirror = "all"
        [[registry.mirror]]
        location = "digest.example"
        pull-from-mirror = "digest-only"
        [[registry.mirror]]
        location = "tag.example"
        pull-from-mirror = "tag-only"
    """)
    assert hosts(resolve(conf, "registry.example/app", by_digest=by_digest)) == expected


def test_mirror_by_digest_only_applies_to_every_mirror(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        location = "registry.example"
        mirror-by-digest-only = true
        [[registry.mirror]]
        location = "mirror.example"
    """)
    assert hosts(resolve(conf, "registry.example/app", by_digest=False)) == ["registry.example/app"]
    assert hosts(resolve(conf, "registry.example/app", by_digest=True)) == [
        "mirror.example/app", "registry.example/app"]


def test_insecure_is_per_endpoint(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        location = "registry.example"
        insecure = true
        [[registry.mirror]]
        location = "mirror.example"
    """)
    mirror, upstream = resolve(conf, "registry.example/app", by_digest=False)
    assert (mirror.mirror, mirror.insecure) == (True, False)
    assert (upstream.mirror, upstream.insecure) == (False, True)


# ---------------------------------------------------------------- blocked

def test_blocked_registry_refuses_naming_registry_and_file(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        location = "registry.example"
        blocked = true
    """)
    with pytest.raises(FailedPrecondition) as e:
        resolve(conf, "registry.example/app", by_digest=False)
    assert '"registry.example"' in str(e.value)
    assert str(tmp_path / "registries.conf") in str(e.value)


def test_blocked_registry_with_mirrors_is_pulled_through_mirrors_only(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        location = "registry.example"
        blocked = true
        [[registry.mirror]]
        location = "mirror.example:5000"
    """)
    assert resolve(conf, "registry.example/app", by_digest=False) == [
        Endpoint("mirror.example:5000", "app", insecure=False, mirror=True)]


def test_blocked_registry_whose_mirrors_skip_this_pull_refuses(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        location = "registry.example"
        blocked = true
        [[registry.mirror]]
        location = "mirror.example"
        pull-from-mirror = "digest-only"
    """)
    assert hosts(resolve(conf, "registry.example/app", by_digest=True)) == ["mirror.example/app"]
    with pytest.raises(FailedPrecondition, match="none of its mirrors serves pulls by tag"):
        resolve(conf, "registry.example/app", by_digest=False)


def test_mirror_under_a_blocked_entry_is_skipped(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        location = "registry.example"
        [[registry.mirror]]
        location = "bad-mirror.example"
        [[registry.mirror]]
        location = "mirror.example"

        [[registry]]
        location = "bad-mirror.example"
        blocked = true
    """)
    assert hosts(resolve(conf, "registry.example/app", by_digest=False)) == [
        "mirror.example/app", "registry.example/app"]


# ------------------------------------------------------- prefix matching

def test_prefix_is_rewritten_to_a_different_location(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        prefix = "docker.io/library"
        location = "registry.example:5000/dockerhub/library"
        [[registry.mirror]]
        location = "mirror.example/library"
    """)
    assert resolve(conf, "docker.io/library/busybox", by_digest=False) == [
        Endpoint("mirror.example", "library/busybox", insecure=False, mirror=True),
        Endpoint("registry.example:5000", "dockerhub/library/busybox", insecure=False, mirror=False),
    ]


def test_rewrite_that_leaves_no_repository_is_refused(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        prefix = "registry.example/app"
        location = "other.example"
    """)
    assert hosts(resolve(conf, "registry.example/app/web", by_digest=False)) == ["other.example/web"]
    with pytest.raises(FailedPrecondition, match="has no repository"):
        resolve(conf, "registry.example/app", by_digest=False)


def test_longest_matching_prefix_wins_whatever_the_order(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        prefix = "registry.example/team/app"
        location = "long.example/app"
        [[registry]]
        location = "registry.example"
        insecure = true
        [[registry]]
        prefix = "registry.example/team"
        location = "middle.example/team"
    """)
    assert hosts(resolve(conf, "registry.example/team/app/web", by_digest=False)) == ["long.example/app/web"]
    assert hosts(resolve(conf, "registry.example/team/db", by_digest=False)) == ["middle.example/team/db"]
    assert resolve(conf, "registry.example/other", by_digest=False)[0].insecure


def test_find_takes_the_longest_prefix_in_any_order() -> None:
    src = Path("/etc/containers/registries.conf")
    long = Registry(prefix="registry.example/team", location="long.example", source=src)
    short = Registry(prefix="registry.example", location="short.example", source=src)
    for order in ((long, short), (short, long)):
        assert RegistriesConf(registries=order).find("registry.example/team/app") is long


def test_prefix_matches_only_at_a_path_boundary(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        prefix = "registry.example/foo"
        location = "mirror.example/foo"
    """)
    assert conf.find("registry.example/foo") is not None
    assert conf.find("registry.example/foo/bar") is not None
    assert conf.find("registry.example/foobar") is None
    assert hosts(resolve(conf, "registry.example/foobar", by_digest=False)) == ["registry.example/foobar"]


def test_prefix_boundaries_include_tag_and_digest_separators(tmp_path: Path) -> None:
    reg = load_text(tmp_path, '[[registry]]\nlocation = "registry.example/foo"\n').registries[0]
    assert reg.match_length("registry.example/foo:1.0") == len("registry.example/foo")
    assert reg.match_length("registry.example/foo@sha256:" + "a" * 64) == len("registry.example/foo")


def test_host_prefix_also_matches_the_host_with_a_port(tmp_path: Path) -> None:
    # containers/image's documented quirk, kept so both read the file alike.
    conf = load_text(tmp_path, '[[registry]]\nlocation = "registry.example"\ninsecure = true\n')
    assert resolve(conf, "registry.example:5000/app", by_digest=False)[0].insecure


def test_wildcard_prefix_matches_subdomains_only(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        prefix = "*.registry.example"
        insecure = true
    """)
    for name in ("a.registry.example/app", "a.b.registry.example/app", "a.registry.example:5000/app"):
        assert resolve(conf, name, by_digest=False)[0].insecure, name
    for name in ("registry.example/app", "evilregistry.example/app", "x.example/a.registry.example/app"):
        assert conf.find(name) is None, name


def test_wildcard_prefix_keeps_the_name_and_uses_its_mirrors(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        prefix = "*.registry.example"
        [[registry.mirror]]
        location = "mirror.example"
    """)
    assert resolve(conf, "eu.registry.example/team/app", by_digest=False) == [
        Endpoint("mirror.example", "team/app", insecure=False, mirror=True),
        Endpoint("eu.registry.example", "team/app", insecure=False, mirror=False),
    ]


def test_exact_prefix_beats_a_wildcard_of_equal_length(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [[registry]]
        prefix = "*.registry.example"
        blocked = true
        [[registry]]
        location = "a.registry.example"
    """)
    assert hosts(resolve(conf, "a.registry.example/app", by_digest=False)) == ["a.registry.example/app"]


def test_resolve_wants_a_bare_repository_name(tmp_path: Path) -> None:
    conf = load_text(tmp_path, MIRRORED)
    for name in ("registry.example/app:1.0", "registry.example/app@sha256:" + "a" * 64, "busybox"):
        with pytest.raises(InvalidArgument):
            resolve(conf, name, by_digest=False)


# ---------------------------------------------------------------- drop-ins

def test_dropin_replaces_the_entry_with_the_same_prefix(tmp_path: Path) -> None:
    conf = load_text(tmp_path, MIRRORED, **{"50-override": """
        [[registry]]
        location = "registry.example"
        insecure = true
    """})
    assert resolve(conf, "registry.example/app", by_digest=False) == [
        Endpoint("registry.example", "app", insecure=True, mirror=False)]
    assert conf.registries[0].source == tmp_path / "registries.conf.d" / "50-override.conf"


def test_dropins_apply_in_name_order_and_only_conf_files(tmp_path: Path) -> None:
    conf = load_text(tmp_path, "", **{
        "20-b": '[[registry]]\nprefix = "registry.example"\nlocation = "b.example"\n',
        "10-a": '[[registry]]\nprefix = "registry.example"\nlocation = "a.example"\n',
    })
    write(tmp_path / "registries.conf.d" / "99-ignored.conf.bak",
          '[[registry]]\nprefix = "registry.example"\nlocation = "ignored.example"\n')
    (tmp_path / "registries.conf.d" / "50-dir.conf").mkdir()
    assert hosts(resolve(conf, "registry.example/app", by_digest=False)) == ["b.example/app"]
    assert [p.name for p in conf.files] == ["registries.conf", "10-a.conf", "20-b.conf"]


def test_explicit_dropin_dir(tmp_path: Path) -> None:
    main = write(tmp_path / "registries.conf", 'unqualified-search-registries = ["a.example"]\n')
    write(tmp_path / "elsewhere" / "x.conf", 'unqualified-search-registries = ["b.example"]\n')
    assert load(main, tmp_path / "elsewhere").search_registries == ("b.example",)
    assert load(main, tmp_path / "absent").search_registries == ("a.example",)


def test_search_registries_are_replaced_by_a_dropin_that_sets_them(tmp_path: Path) -> None:
    main = 'unqualified-search-registries = ["registry.example", "127.0.0.1:5000"]\n'
    assert load_text(tmp_path, main).search_registries == ("registry.example", "127.0.0.1:5000")
    kept = load_text(tmp_path, main, **{"10-other": "[aliases]\n"})
    assert kept.search_registries == ("registry.example", "127.0.0.1:5000")
    cleared = load_text(tmp_path, main, **{"20-clear": "unqualified-search-registries = []\n"})
    assert cleared.search_registries == ()


def test_aliases_merge_key_by_key_later_wins_and_empty_removes(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [aliases]
        "app" = "registry.example/team/app"
        "db" = "registry.example/team/db"
        "tool" = "registry.example/team/tool"
    """, **{
        "10-a": '[aliases]\n"app" = "mirror.example:5000/app"\n"tool" = ""\n',
        "20-b": '[aliases]\n"busybox" = "docker.io/busybox"\n',
    })
    assert conf.aliases == {
        "app": "mirror.example:5000/app",
        "db": "registry.example/team/db",
        "busybox": "docker.io/library/busybox",
    }
    assert conf.alias_for("app") == "mirror.example:5000/app"
    assert conf.alias_for("tool") is None


# ----------------------------------------------------------------- errors

def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    assert "invalid TOML" in config_error(tmp_path, "[[registry]\nlocation = \n")


def test_bad_dropin_names_the_dropin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, "", **{"30-bad": "[[registry]]\nprefix = \"registry.example\"\n"})
    assert str(e.value).startswith(str(tmp_path / "registries.conf.d" / "30-bad.conf") + ": ")
    assert "location must be set" in str(e.value)


def test_v1_keys_mixed_with_v2_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, """
        unqualified-search-registries = ["registry.example"]
        [registries.search]
        registries = ["registry.example"]
    """)
    assert "v1" in message and "unqualified-search-registries" in message


def test_v1_main_file_is_converted(tmp_path: Path) -> None:
    conf = load_text(tmp_path, """
        [registries.search]
        registries = ["registry.example", "mirror.example"]
        [registries.insecure]
        registries = ["127.0.0.1:5000"]
        [registries.block]
        registries = ["blocked.example"]
    """)
    assert conf.search_registries == ("registry.example", "mirror.example")
    assert resolve(conf, "127.0.0.1:5000/app", by_digest=False)[0].insecure
    with pytest.raises(FailedPrecondition):
        resolve(conf, "blocked.example/app", by_digest=False)


def test_v1_dropin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="drop-ins must use the v2 format"):
        load_text(tmp_path, "", **{"10-old": '[registries.search]\nregistries = ["registry.example"]\n'})


@pytest.mark.parametrize("prefix", [
    "registry.*.example", "*.registry.example/team", "*.registry.example:5000", "*registry.example", "*.",
])
def test_wildcard_in_the_wrong_place_is_refused(tmp_path: Path, prefix: str) -> None:
    message = config_error(tmp_path, f'[[registry]]\nprefix = "{prefix}"\nlocation = "registry.example"\n')
    assert f'"{prefix}"' in message and "wildcard" in message


def test_mirror_without_location_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, """
        [[registry]]
        location = "registry.example"
        [[registry.mirror]]
        insecure = true
    """)
    assert 'prefix "registry.example": mirror #1: location is not set' in message


@pytest.mark.parametrize(("body", "expected"), [
    ('[[registry]]\ninsecure = true\n', "neither prefix nor location"),
    ('[[registry]]\nlocation = "https://registry.example"\n', "not a URL"),
    ('[[registry]]\nlocation = "registry.example"\ninsecure = "yes"\n', "insecure: expected a boolean, got a string"),
    ('[[registry]]\nlocation = "registry.example"\npull-from-mirror = "all"\n', "[[registry.mirror]]"),
    ('[[registry]]\nlocation = "registry.example"\n[[registry.mirror]]\nlocation = "m.example"\n'
     'pull-from-mirror = "sometimes"\n', 'got "sometimes"'),
    ('[[registry]]\nlocation = "registry.example"\nmirror-by-digest-only = true\n[[registry.mirror]]\n'
     'location = "m.example"\npull-from-mirror = "all"\n', "mirror-by-digest-only"),
    ('[[registry]]\nlocation = "registry.example"\n[[registry]]\nprefix = "registry.example/x"\n'
     'location = "registry.example"\ninsecure = true\n', "different insecure settings"),
    ('registry = {location = "registry.example"}\n', "registry: expected an array, got a table"),
    ('unqualified-search-registries = ["registry.example/team"]\n', "not a host[:port]"),
    ('[aliases]\n"app" = "registry.example/app:1.0"\n', "must not contain a tag or digest"),
    ('[aliases]\n"registry.example/app" = "registry.example/app"\n', "without a registry"),
    ('[aliases]\n"app" = "team/app"\n', "fully qualified"),
])
def test_invalid_entries_give_one_line_naming_file_and_problem(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in config_error(tmp_path, body)


def test_unknown_keys_are_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="podrt.images.registries"):
        conf = load_text(tmp_path, """
            short-name-mode = "enforcing"
            future-key = 1
            [[registry]]
            location = "registry.example"
            future-registry-key = true
        """)
    assert conf.registries[0].location == "registry.example"
    assert "future-key" in caplog.text and "future-registry-key" in caplog.text
    assert "short-name-mode" not in caplog.text


# ----------------------------------------------------------------- certs.d

def test_certs_d_collects_cas_and_the_client_pair(tmp_path: Path) -> None:
    d = tmp_path / "certs.d" / "registry.example:5000"
    for name in ("ca.crt", "extra.crt", "client.cert", "client.key", "README"):
        write(d / name, "x")
    assert CertsD([tmp_path / "certs.d"]).for_host("registry.example:5000") == TlsFiles(
        ca_files=[d / "ca.crt", d / "extra.crt"], client_cert=d / "client.cert", client_key=d / "client.key")


def test_certs_d_directory_name_is_host_port_exactly(tmp_path: Path) -> None:
    write(tmp_path / "certs.d" / "registry.example:5000" / "ca.crt", "x")
    certs = CertsD([tmp_path / "certs.d"])
    assert certs.for_host("registry.example") == TlsFiles()
    assert certs.for_host("registry.example:5000").ca_files


def test_certs_d_first_directory_with_the_host_wins(tmp_path: Path) -> None:
    write(tmp_path / "containers" / "127.0.0.1:5000" / "a.crt", "x")
    write(tmp_path / "docker" / "127.0.0.1:5000" / "b.crt", "x")
    write(tmp_path / "docker" / "mirror.example" / "c.crt", "x")
    certs = CertsD([tmp_path / "containers", tmp_path / "docker"])
    assert certs.for_host("127.0.0.1:5000").ca_files == [tmp_path / "containers" / "127.0.0.1:5000" / "a.crt"]
    assert certs.for_host("mirror.example").ca_files == [tmp_path / "docker" / "mirror.example" / "c.crt"]
    assert CertsD([tmp_path / "absent"]).for_host("mirror.example") == TlsFiles()


def test_certs_d_default_directories() -> None:
    assert CertsD().dirs == [Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")]


def test_client_cert_without_key_names_both_files(tmp_path: Path) -> None:
    d = tmp_path / "registry.example"
    write(d / "client.cert", "x")
    with pytest.raises(FailedPrecondition) as e:
        CertsD([tmp_path]).for_host("registry.example")
    assert str(d / "client.cert") in str(e.value) and str(d / "client.key") in str(e.value)


def test_client_key_without_cert_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "registry.example" / "client.key", "x")
    with pytest.raises(FailedPrecondition, match="client.cert"):
        CertsD([tmp_path]).for_host("registry.example")


def test_certs_d_host_cannot_escape_the_directory(tmp_path: Path) -> None:
    for host in ("..", "a/../b", ""):
        with pytest.raises(InvalidArgument):
            CertsD([tmp_path]).for_host(host)


def test_several_client_pairs_use_the_first_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "registry.example"
    for name in ("b.cert", "b.key", "a.cert", "a.key"):
        write(d / name, "x")
    with caplog.at_level(logging.WARNING, logger="podrt.images.registries"):
        tls = CertsD([tmp_path]).for_host("registry.example")
    assert (tls.client_cert, tls.client_key) == (d / "a.cert", d / "a.key")
    assert "2 client certificates" in caplog.text
