"""Log lines a client can cause at will, kept to a bounded rate."""

from __future__ import annotations

import logging
import time


class RateLimited:
    """At most `burst` lines per `period` seconds; the next line that gets
    through says how many were held back, so counts are never lost."""

    def __init__(self, logger: logging.Logger, *, period: float = 10.0, burst: int = 5) -> None:
        self._log, self._period, self._burst = logger, period, burst
        self._window_start = -period
        self._sent = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= self._period:
            self._window_start, self._sent = now, 0
        if self._sent >= self._burst:
            self._suppressed += 1
            return
        self._sent += 1
        if self._suppressed:
            msg += " (%d similar line(s) suppressed)"
            args += (self._suppressed,)
            self._suppressed = 0
        self._log.warning(msg, *args)
