"""CDI names: a device is asked for as "<vendor>/<class>=<name>", and a spec
file's kind is "<vendor>/<class>". The grammar is the CDI spec's (and its Go
parser's): vendor and class start with a letter, end with a letter or digit,
and hold letters, digits, '_', '-' and '.' between; a device name starts and
ends with a letter or digit and may also hold ':' between. ASCII only."""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping

ANNOTATION_PREFIX = "cdi.k8s.io/"  # a CRI annotation whose value is a comma-separated list of qualified names

_LETTERS = frozenset(string.ascii_letters)
_ALNUM = _LETTERS | frozenset(string.digits)
_KIND_MIDDLE = _ALNUM | frozenset("_-.")
_NAME_MIDDLE = _KIND_MIDDLE | frozenset(":")


def _check(what: str, text: str, first: frozenset[str], middle: frozenset[str]) -> None:
    if not text:
        raise ValueError(f"empty {what}")
    if text[0] not in first:
        raise ValueError(f"{what} {text!r} must start with a letter" + (" or digit" if first is _ALNUM else ""))
    if bad := next((c for c in text[1:-1] if c not in middle), None):
        raise ValueError(f"{what} {text!r} holds {bad!r}")
    if len(text) > 1 and text[-1] not in _ALNUM:
        raise ValueError(f"{what} {text!r} must end with a letter or digit")


def check_vendor(vendor: str) -> None:
    _check("vendor", vendor, _LETTERS, _KIND_MIDDLE)


def check_class(klass: str) -> None:
    _check("class", klass, _LETTERS, _KIND_MIDDLE)


def check_device_name(name: str) -> None:
    _check("device name", name, _ALNUM, _NAME_MIDDLE)


def split_kind(kind: str) -> tuple[str, str]:
    """(vendor, class) of "vendor/class"; ValueError naming what is wrong."""
    vendor, slash, klass = kind.partition("/")
    if not slash or not vendor or not klass:
        raise ValueError(f"{kind!r} is not <vendor>/<class>")
    check_vendor(vendor)
    check_class(klass)
    return vendor, klass


def parse_qualified(device: str) -> tuple[str, str, str]:
    """(vendor, class, name) of a fully qualified device name; ValueError naming what is wrong."""
    kind, eq, name = device.partition("=")
    if not eq or not kind or not name or device.startswith("/"):
        raise ValueError(f"{device!r} is not a fully qualified CDI device name (<vendor>/<class>=<name>)")
    try:
        vendor, klass = split_kind(kind)
        check_device_name(name)
    except ValueError as exc:
        raise ValueError(f"CDI device {device!r}: {exc}") from None
    return vendor, klass, name


def annotated(annotations: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(key, device) of each device the cdi.k8s.io/ annotations ask for, by key.
    Only the prefix is looked at, as CRI-O and containerd do; the value is not
    trimmed or filtered (an empty item is an invalid name, as in CDI's parser)."""
    for key in sorted(k for k in annotations if k.startswith(ANNOTATION_PREFIX)):
        for device in annotations[key].split(","):
            yield key, device
