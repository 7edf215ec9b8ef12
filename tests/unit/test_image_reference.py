"""Image reference parsing: normalised as containerd's CRI plugin and CRI-O do
(docker/distribution's ParseNormalizedNamed + TagNameOnly), errors naming why."""

from __future__ import annotations

import pytest

from podrt.errors import InvalidArgument
from podrt.oci import reference as ref
from podrt.oci.reference import Reference

H64 = "a" * 64
H128 = "b" * 128
D256 = f"sha256:{H64}"

VALID = {
    # text: (domain, path, tag, digest)
    "busybox": ("docker.io", "library/busybox", "latest", None),
    "busybox:1.36": ("docker.io", "library/busybox", "1.36", None),
    "user/img": ("docker.io", "user/img", "latest", None),
    "user/img:v2": ("docker.io", "user/img", "v2", None),
    "docker.io/busybox": ("docker.io", "library/busybox", "latest", None),
    "docker.io/library/busybox:latest": ("docker.io", "library/busybox", "latest", None),
    "index.docker.io/busybox": ("docker.io", "library/busybox", "latest", None),
    "index.docker.io/user/img:1": ("docker.io", "user/img", "1", None),
    "localhost/x": ("localhost", "x", "latest", None),
    "localhost:5000/x:dev": ("localhost:5000", "x", "dev", None),
    "localhost": ("docker.io", "library/localhost", "latest", None),
    "localhost:5000": ("docker.io", "library/localhost", "5000", None),
    "host.name/x": ("host.name", "x", "latest", None),
    "host:5000/x": ("host:5000", "x", "latest", None),
    "registry.k8s.io/pause:3.9": ("registry.k8s.io", "pause", "3.9", None),
    "podrt.local/pause:builtin": ("podrt.local", "pause", "builtin", None),
    "My.Registry.io/app": ("My.Registry.io", "app", "latest", None),
    "10.0.0.1:5000/app": ("10.0.0.1:5000", "app", "latest", None),
    "[::1]:5000/x": ("[::1]:5000", "x", "latest", None),
    "[fe80::1]/x:t": ("[fe80::1]", "x", "t", None),
    "quay.io/a/b/c/d:1": ("quay.io", "a/b/c/d", "1", None),
    "gcr.io/proj/sub/img": ("gcr.io", "proj/sub/img", "latest", None),
    "user/a.b_c__d-e--f": ("docker.io", "user/a.b_c__d-e--f", "latest", None),
    "my-host.io/x": ("my-host.io", "x", "latest", None),
    "user/a.b": ("docker.io", "user/a.b", "latest", None),
    "user/a_b": ("docker.io", "user/a_b", "latest", None),
    "user/a__b": ("docker.io", "user/a__b", "latest", None),
    "user/a-b": ("docker.io", "user/a-b", "latest", None),
    "user/a---b": ("docker.io", "user/a---b", "latest", None),
    "tag/with:A_b.c-D": ("docker.io", "tag/with", "A_b.c-D", None),
    "busybox:_x": ("docker.io", "library/busybox", "_x", None),
    f"busybox:{'t' * 128}": ("docker.io", "library/busybox", "t" * 128, None),
    f"busybox@{D256}": ("docker.io", "library/busybox", None, D256),
    f"busybox:1.36@{D256}": ("docker.io", "library/busybox", "1.36", D256),
    f"host:5000/x:t@{D256}": ("host:5000", "x", "t", D256),
    f"x@sha512:{H128}": ("docker.io", "library/x", None, f"sha512:{H128}"),
    f"x@sha384:{'c' * 96}": ("docker.io", "library/x", None, f"sha384:{'c' * 96}"),
    f"x@multihash+b58:{'0' * 32}": ("docker.io", "library/x", None, f"multihash+b58:{'0' * 32}"),
    f"x@my.algo:{'ABCDEF' * 6}": ("docker.io", "library/x", None, f"my.algo:{'ABCDEF' * 6}"),
    # distribution reads a bare "sha256:<hex>" as a repository; callers test IDs first
    D256: ("docker.io", "library/sha256", H64, None),
}

INVALID = {
    "": "reference is empty",
    "Foo/bar": "repository name must be lowercase",
    "BusyBox": "repository name must be lowercase",
    "user/Img:1": "repository name must be lowercase",
    "host.io/Img": "repository name must be lowercase",
    "busybox:": 'invalid tag ""',
    "busybox:-x": 'invalid tag "-x"',
    "busybox:.x": 'invalid tag ".x"',
    "user/x:a/b": 'invalid tag "a/b"',
    "busybox:a/b": 'invalid domain "busybox:a"',  # a first component with ":" is a domain
    "my_host.io/x": 'invalid domain "my_host.io"',
    "busybox:a:b": 'invalid tag "a:b"',
    "busybox:tág": 'invalid tag "tág"',
    f"busybox:{'t' * 129}": "invalid tag",
    "busybox@": 'invalid digest ""',
    "busybox@sha256:abc": "at least 32 hex digits",
    f"busybox@sha256:{'a' * 63}": "sha256 needs 64 lowercase hex digits",
    f"busybox@sha256:{'a' * 65}": "sha256 needs 64 lowercase hex digits",
    f"busybox@sha256:{'A' * 64}": "sha256 needs 64 lowercase hex digits",
    f"busybox@sha512:{H64}": "sha512 needs 128 lowercase hex digits",
    f"busybox@sha256:{'g' * 64}": "at least 32 hex digits",
    f"busybox@1sha:{H64}": "at least 32 hex digits",
    f"busybox@sha256:{H64}@{D256}": "invalid digest",
    H64: "a 64-hex image ID is not a repository name",
    "/busybox": 'invalid repository name "/busybox"',
    "user/": 'invalid repository name "user/"',
    "user//img": 'invalid repository name "user//img"',
    "user/-img": 'invalid repository name "user/-img"',
    "user/img-": 'invalid repository name "user/img-"',
    "user/a..b": 'invalid repository name "user/a..b"',
    "user/a___b": 'invalid repository name "user/a___b"',
    "user/a b": 'invalid repository name "user/a b"',
    "busybox\n": 'invalid repository name "library/busybox\n"',
    "host:port/x": 'invalid domain "host:port"',
    "-host.io/x": 'invalid domain "-host.io"',
    "host..io/x": 'invalid domain "host..io"',
    "[::1/x": 'invalid domain "[::1"',
    "host.io/": 'invalid repository name ""',
    f"host.io/{'a' * 248}": "repository name must not be more than 255 characters",
}


@pytest.mark.parametrize("text", list(VALID), ids=[t[:40] for t in VALID])
def test_valid_normalises(text: str) -> None:
    domain, path, tag, digest = VALID[text]
    r = ref.parse(text)
    assert r == Reference(domain, path, tag, digest)
    assert ref.parse(str(r)) == r  # the normalised form is a fixed point
    assert ref.parse(r.familiar) == r  # and the familiar one reads back the same


@pytest.mark.parametrize("text", list(INVALID), ids=[repr(t[:40]) for t in INVALID])
def test_invalid_names_reference_and_reason(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        ref.parse(text)
    message = str(err.value)
    assert message.startswith(f'invalid image reference "{text}": ')
    assert INVALID[text] in message


def test_longest_name_is_accepted() -> None:
    assert len(ref.parse(f"host.io/{'a' * 247}").name) == 255


def test_example_message() -> None:
    with pytest.raises(InvalidArgument, match='^invalid image reference "Foo/bar": repository name must be lowercase$'):
        ref.parse("Foo/bar")


STRINGS = {
    # text: (str, familiar, name, repo_tag)
    "busybox": ("docker.io/library/busybox:latest", "busybox:latest", "docker.io/library/busybox", "docker.io/library/busybox:latest"),
    "user/img:1": ("docker.io/user/img:1", "user/img:1", "docker.io/user/img", "docker.io/user/img:1"),
    f"busybox@{D256}": (f"docker.io/library/busybox@{D256}", f"busybox@{D256}", "docker.io/library/busybox", None),
    f"busybox:1@{D256}": (f"docker.io/library/busybox:1@{D256}", f"busybox:1@{D256}", "docker.io/library/busybox", "docker.io/library/busybox:1"),
    "quay.io/a/b:2": ("quay.io/a/b:2", "quay.io/a/b:2", "quay.io/a/b", "quay.io/a/b:2"),
    "localhost/x": ("localhost/x:latest", "localhost/x:latest", "localhost/x", "localhost/x:latest"),
    "docker.io/library/a/b": ("docker.io/library/a/b:latest", "library/a/b:latest", "docker.io/library/a/b", "docker.io/library/a/b:latest"),
    "docker.io/foo.bar/x": ("docker.io/foo.bar/x:latest", "docker.io/foo.bar/x:latest", "docker.io/foo.bar/x", "docker.io/foo.bar/x:latest"),
    "docker.io/localhost/x": ("docker.io/localhost/x:latest", "docker.io/localhost/x:latest", "docker.io/localhost/x", "docker.io/localhost/x:latest"),
}


@pytest.mark.parametrize("text", list(STRINGS), ids=[t[:40] for t in STRINGS])
def test_string_forms(text: str) -> None:
    full, familiar, name, repo_tag = STRINGS[text]
    r = ref.parse(text)
    assert (str(r), r.familiar, r.name, r.repo_tag) == (full, familiar, name, repo_tag)


def test_repo_digest_and_with_digest() -> None:
    r = ref.parse("busybox:1.36")
    assert not r.is_digest_ref
    assert r.repo_digest(D256) == f"docker.io/library/busybox@{D256}"
    pinned = r.with_digest(D256)
    assert pinned.is_digest_ref
    assert str(pinned) == f"docker.io/library/busybox:1.36@{D256}"
    assert pinned.repo_tag == "docker.io/library/busybox:1.36"
    assert ref.parse(f"busybox@{D256}").is_digest_ref


@pytest.mark.parametrize("bad", ["sha256:abc", f"sha256:{'A' * 64}", H64, ""])
def test_repo_digest_rejects_bad_digests(bad: str) -> None:
    r = ref.parse("busybox")
    with pytest.raises(InvalidArgument, match="invalid digest"):
        r.repo_digest(bad)
    with pytest.raises(InvalidArgument, match="invalid digest"):
        r.with_digest(bad)


IDS = {
    H64: True,
    D256: True,
    "0123456789abcdef" * 4: True,
    "A" * 64: False,
    f"sha256:{'A' * 64}": False,
    "a" * 63: False,
    "a" * 65: False,
    f"sha512:{H64}": False,
    f"sha256:{H64}\n": False,
    "busybox": False,
    "": False,
}


@pytest.mark.parametrize("text", list(IDS), ids=[repr(t[:24]) for t in IDS])
def test_image_id_detection(text: str) -> None:
    assert ref.looks_like_image_id(text) is IDS[text]
    if IDS[text]:
        assert ref.parse_id(text) == f"sha256:{text.removeprefix('sha256:')}"
    else:
        with pytest.raises(InvalidArgument, match="invalid image ID"):
            ref.parse_id(text)
