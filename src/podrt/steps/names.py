"""Name reservation and the ID index, for pods (the pod's and the infra's
names) and containers (theirs) alike."""

from __future__ import annotations

from typing import Any

from podrt.errors import AlreadyExists
from podrt.state.names import NameTaken
from podrt.steps.base import DepsStep
from podrt.steps.context import Named, Registries


class ReserveNames(DepsStep[Named, Registries]):
    kind = "names"
    journaled = False  # in memory: a crash releases it; restore rebuilds it from disk

    def record(self, ctx: Named) -> dict[str, Any]:
        return {"id": ctx.id, "names": ctx.reserved_names}

    async def do(self, ctx: Named, data: dict[str, Any]) -> None:
        reserved = []
        try:
            for name in data["names"]:
                self.deps.names.reserve(name, ctx.id)
                reserved.append(name)
        except NameTaken as exc:
            for name in reserved:
                self.deps.names.release(name, ctx.id)
            raise AlreadyExists(f"{exc}; remove it first") from None

    async def undo(self, data: dict[str, Any]) -> None:
        for name in data["names"]:
            self.deps.names.release(name, data["id"])


class IndexId(DepsStep[Named, Registries]):
    kind = "id"
    journaled = False  # in memory, like the names

    def record(self, ctx: Named) -> dict[str, Any]:
        return {"id": ctx.id}

    async def do(self, ctx: Named, data: dict[str, Any]) -> None:
        self.deps.ids.add(ctx.id)

    async def undo(self, data: dict[str, Any]) -> None:
        self.deps.ids.remove(data["id"])
