"""Debug-only fault points of the transaction runner (rollback.py): a step's
"before" or "after", armed from the daemon's config or by a test."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

When = Literal["before", "after"]


class InjectedFault(Exception):
    """Raised by an armed fault point."""


class FaultPlan:
    """Debug-only fault points; built from daemon config, never from a request."""

    def __init__(self) -> None:
        self._armed: dict[tuple[str, str], tuple[BaseException | None, int]] = {}

    def arm(self, step_name: str, when: When, exc: BaseException | None = None, times: int = 1) -> None:
        if when not in ("before", "after"):
            raise ValueError(f"fault point {when!r} must be 'before' or 'after'")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        self._armed[(step_name, when)] = (exc, times)

    def check(self, step_name: str, when: When) -> None:
        if (slot := self._armed.pop((step_name, when), None)) is None:
            return
        exc, times = slot
        if times > 1:
            self._armed[(step_name, when)] = (exc, times - 1)
        raise exc or InjectedFault(f"injected fault {when} {step_name}")

    @classmethod
    def parse(cls, specs: Iterable[str]) -> FaultPlan:
        """Parse "<step>:before" / "<step>:after" specs."""
        plan = cls()
        for spec in specs:
            name, _, when = spec.strip().rpartition(":")
            if not name or when not in ("before", "after"):
                raise ValueError(f"bad fault spec {spec!r}: expected '<step>:before' or '<step>:after'")
            plan.arm(name, when)  # type: ignore[arg-type]
        return plan
