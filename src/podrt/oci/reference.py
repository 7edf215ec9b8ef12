"""Image references: parse what CRI callers send, store what they mean.

Kubelet and crictl send familiar names (``busybox``, ``user/app:1.2``), while
the image store records normalised ones (``docker.io/library/busybox:latest``)
so that every spelling of one image finds the same record. The normalisation
is the one containerd's CRI plugin and CRI-O apply (docker/distribution's
``ParseNormalizedNamed`` followed by ``TagNameOnly``); ``familiar`` turns a
stored name back into the short form for display.

An image's ID is not a reference: it is the digest of its config blob
(``sha256:<hex>``). RemoveImage and ImageStatus accept IDs as well as names, so
callers test ``looks_like_image_id`` before ``parse`` (a bare ``sha256:<hex>``
would otherwise parse, as it does in distribution, as the repository
``docker.io/library/sha256`` with a 64-character tag).
"""

from __future__ import annotations

import re

import attrs

from podrt.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = re.compile(rf"{_HOST}(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}  # go-digest's registered algorithms
_HEX64 = re.compile(r"[a-f0-9]{64}")
_IMAGE_ID = re.compile(r"(?:sha256:)?([a-f0-9]{64})")


def _invalid(text: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f'invalid image reference "{text}": {reason}')


def _check_digest(text: str, digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise _invalid(text, f'invalid digest "{digest}": want algorithm:hex with at least 32 hex digits')
    algorithm, hex_ = digest.split(":", 1)
    want = _HEX_LENGTHS.get(algorithm)
    if want is not None and (len(hex_) != want or hex_ != hex_.lower()):
        raise _invalid(text, f'invalid digest "{digest}": {algorithm} needs {want} lowercase hex digits')
    return digest


def is_domain(component: str) -> bool:
    """Whether a name's first component names a registry (docker's rule)."""
    return "." in component or ":" in component or component == "localhost"


@attrs.frozen
class Reference:
    """A normalised image reference; build one with ``parse``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"

    @property
    def familiar(self) -> str:
        """Docker's short form for display: ``busybox:latest``, ``user/app:1``."""
        full = str(self)
        if self.domain != DEFAULT_DOMAIN:
            return full
        path = self.path
        short = path.removeprefix(OFFICIAL_PREFIX)
        if path.startswith(OFFICIAL_PREFIX) and "/" not in short:
            path = short
        elif is_domain(path.split("/", 1)[0]):
            return full  # "foo.bar/x" would read back with the domain foo.bar
        return path + full[len(self.name) :]

    @property
    def repo_tag(self) -> str | None:
        """``name:tag``, as listed in an image's repo_tags; None without a tag."""
        return f"{self.name}:{self.tag}" if self.tag is not None else None

    def repo_digest(self, digest: str) -> str:
        """``name@digest``, as listed in an image's repo_digests."""
        return f"{self.name}@{_check_digest(str(self), digest)}"

    def with_digest(self, digest: str) -> Reference:
        return attrs.evolve(self, digest=_check_digest(str(self), digest))

    @property
    def is_digest_ref(self) -> bool:
        return self.digest is not None


def parse(text: str) -> Reference:
    """Parse and normalise ``text``; a name alone gets the tag ``latest``.

    Raises InvalidArgument naming the reference and what is wrong with it.
    """
    if not text:
        raise _invalid(text, "reference is empty")
    if _HEX64.fullmatch(text):
        raise _invalid(text, "a 64-hex image ID is not a repository name")
    first, slash, rest = text.partition("/")
    if slash and is_domain(first):
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, text
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if not _DOMAIN.fullmatch(domain):
        raise _invalid(text, f'invalid domain "{domain}"')

    remainder, at, digest = remainder.partition("@")
    path, colon, tag = remainder.partition(":")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if not _PATH.fullmatch(path):
        if _PATH.fullmatch(path.lower()):
            raise _invalid(text, "repository name must be lowercase")
        raise _invalid(text, f'invalid repository name "{path}"')
    if colon and not _TAG.fullmatch(tag):
        raise _invalid(text, f'invalid tag "{tag}"')
    if at:
        _check_digest(text, digest)
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _invalid(text, f"repository name must not be more than {NAME_MAX} characters")
    return Reference(
        domain=domain,
        path=path,
        tag=tag if colon else (None if at else DEFAULT_TAG),
        digest=digest if at else None,
    )


def is_reference(text: str) -> bool:
    """Whether ``text`` parses (config's check of the pause image)."""
    try:
        parse(text)
        return True
    except InvalidArgument:
        return False


def looks_like_image_id(text: str) -> bool:
    """True for an image ID: 64 lowercase hex digits, bare or ``sha256:``-prefixed."""
    return _IMAGE_ID.fullmatch(text) is not None


def parse_id(text: str) -> str:
    """The image ID ``text`` names, as ``sha256:<hex>``."""
    match = _IMAGE_ID.fullmatch(text)
    if match is None:
        raise InvalidArgument(f'invalid image ID "{text}": want 64 hex digits, optionally after "sha256:"')
    return f"sha256:{match.group(1)}"
