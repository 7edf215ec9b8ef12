"""Name reservations: one pod (and one infra container) per name, as in CRI-O.

In memory only: after a restart it is rebuilt from the sandboxes on disk, so a
crash never leaves a stale reservation behind.
"""

from __future__ import annotations


class NameTaken(Exception):
    def __init__(self, name: str, owner: str) -> None:
        super().__init__(f"name {name} is reserved for {owner}")
        self.name, self.owner = name, owner


class NameRegistry:
    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def reserve(self, name: str, owner: str) -> None:
        current = self._owners.setdefault(name, owner)
        if current != owner:
            raise NameTaken(name, current)

    def release(self, name: str, owner: str | None = None) -> None:
        """Idempotent; with `owner`, releases only that owner's reservation."""
        if owner is None or self._owners.get(name) == owner:
            self._owners.pop(name, None)

    def owner(self, name: str) -> str | None:
        return self._owners.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._owners

    def __len__(self) -> int:
        return len(self._owners)
