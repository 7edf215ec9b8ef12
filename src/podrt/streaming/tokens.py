"""Single-use tokens for the streaming URLs Exec, Attach and PortForward
answer, as the kubelet's streaming library issues them: unguessable, valid
for one upgrade within a minute, and at most `limit` outstanding (a flood of
RPCs that never connect cannot grow the table)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from podrt.errors import ResourceExhausted

T = TypeVar("T")
TOKEN_TTL = 60.0
TOKEN_LIMIT = 1000


class TokenCache(Generic[T]):
    def __init__(self, ttl: float = TOKEN_TTL, limit: int = TOKEN_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._limit, self._clock = ttl, limit, clock
        self._entries: dict[str, tuple[float, T]] = {}

    def issue(self, request: T) -> str:
        now = self._clock()
        if len(self._entries) >= self._limit:
            self._entries = {t: e for t, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= self._limit:
                raise ResourceExhausted(f"{self._limit} streaming requests are waiting for their client; try again later")
        token = secrets.token_urlsafe(24)
        self._entries[token] = (now + self._ttl, request)
        return token

    def take(self, token: str) -> T | None:
        """The request once: None for an unknown, used or expired token."""
        entry = self._entries.pop(token, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)
