"""Full IDs from unique prefixes (CRI-O's truncindex): `crictl inspectp 3f2a` works."""

from __future__ import annotations

import bisect

from podrt.errors import InvalidArgument, NotFound


class IdIndex:
    def __init__(self) -> None:
        self._ids: list[str] = []  # sorted, so a prefix is a contiguous range

    def add(self, full_id: str) -> None:
        i = bisect.bisect_left(self._ids, full_id)
        if i == len(self._ids) or self._ids[i] != full_id:
            self._ids.insert(i, full_id)

    def remove(self, full_id: str) -> None:
        i = bisect.bisect_left(self._ids, full_id)
        if i < len(self._ids) and self._ids[i] == full_id:
            del self._ids[i]

    def matching(self, prefix: str) -> list[str]:
        i = bisect.bisect_left(self._ids, prefix)
        out = []
        while i < len(self._ids) and self._ids[i].startswith(prefix):
            out.append(self._ids[i])
            i += 1
        return out

    def get(self, prefix: str, what: str) -> str:
        """The one ID starting with prefix; NotFound (naming `what`, e.g. "container") or
        InvalidArgument (ambiguous) otherwise."""
        if not prefix:
            raise InvalidArgument("ID must not be empty")
        found = self.matching(prefix)
        if not found:
            raise NotFound(f"no {what} with ID {prefix!r}")
        if len(found) > 1:
            raise InvalidArgument(f"ID prefix {prefix!r} is ambiguous ({len(found)} matches)")
        return found[0]

    def __len__(self) -> int:
        return len(self._ids)
