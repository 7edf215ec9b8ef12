"""Range checks for the numbers and enums a CRI request hands on.

protobuf lets a client send any integer for an enum field and any int64 for
a uid; further down they would end as a KeyError or as runc's "cannot
unmarshal number". Converters pass each such value through here, so the
client gets InvalidArgument naming the field instead.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar, cast

from podrt.errors import InvalidArgument
from podrt.model.container import MAX_ID

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
