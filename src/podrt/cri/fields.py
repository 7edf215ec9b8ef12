"""Range checks for the numbers and enums a CRI request hands on.

protobuf lets a client send any integer for an enum field and any int64 for
a uid; further down they would end as a KeyError or as runc's "cannot
unmarshal number". Converters pass each such value through here, so the
client gets InvalidArgument naming the field instead.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar, cast

from podrt.api.runtime import v1 as cri
from podrt.errors import InvalidArgument
from podrt.model.container import MAX_ID
from podrt.oci import signals

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
E = TypeVar("E", bound=int)


def enum_value(field: str, table: Mapping[int, T], value: int) -> T:
    """The domain value for a wire enum value (unknown ones decode as plain ints)."""
    try:
        return table[value]
    except KeyError:
        known = ", ".join(f"{getattr(k, 'name', k)} ({int(k)})" for k in table)
        raise InvalidArgument(f"{field}: unknown value {value} (expected one of {known})") from None


def in_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{field}: {value} is out of range ({low} to {high})")
    return value


def id_value(field: str, value: int) -> int:
    """A uid or gid."""
    return in_range(field, value, 0, MAX_ID)


def wire_enum(table: Mapping[K, int], enum: type[E]) -> dict[K, E]:
    """`table` with its values typed as the wire enum they are (the same
    members): mypy reads a betterproto enum's members as plain ints."""
    return {k: enum(v) for k, v in table.items()}


def or_unset(value: T | None) -> T:
    """A message field's value, or None, which leaves it unset: betterproto
    takes None, though its generated annotations name the message alone."""
    return cast(T, value)


def signal_name(field: str, value: int) -> str:
    """A CRI Signal as images and runc name it ("SIGRTMINPLUS3" is "SIGRTMIN+3");
    "" for RUNTIME_DEFAULT. The one place the two spellings meet, with `wire_signal`."""
    if value == cri.Signal.RUNTIME_DEFAULT:
        return ""
    try:
        name = cri.Signal(value).name or ""
    except ValueError:
        raise InvalidArgument(f"{field}: unknown signal {value} (Signal is 0 to {max(cri.Signal)})") from None
    return name.replace("PLUS", "+").replace("MINUS", "-")


def wire_signal(name: str) -> cri.Signal:
    """The CRI Signal for a signal however written ("TERM", "15", "SIGRTMIN+3");
    RUNTIME_DEFAULT for what names none."""
    canonical = signals.canonical(name)
    key = canonical.replace("+", "PLUS").replace("-", "MINUS") if canonical else "RUNTIME_DEFAULT"
    return cri.Signal(cri.Signal[key])  # the call types it: mypy reads members as ints
