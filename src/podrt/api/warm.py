"""betterproto's per-message set-up, done ahead instead of on first use.

betterproto builds each message class's metadata (field types, defaults,
nested classes) and its codec's view of the class the first time a message
of that class is made or parsed: the first CreateContainer's request took
23-34 ms of the loop's CPU for it, a stall the blocking detector reports.
A thread does it for every CRI message while the daemon starts (about
150 ms of CPU, taken between start-up's own waits); a call that comes first
does its class's share itself, which is harmless (the result is the same).
"""

from __future__ import annotations

import inspect
import threading

import betterproto

from podrt.api.runtime import v1 as cri
from podrt.api import lean_decode


def warm_messages() -> None:
    """Metadata, an empty parse and an empty encoding of every CRI message class."""
    for cls in vars(cri).values():
        if inspect.isclass(cls) and issubclass(cls, betterproto.Message):
            cls().parse(b"")  # the class's metadata, and the codec's
            bytes(cls())
    for cls in lean_decode.LEAN_REQUESTS:  # and the plans of the requests podrt decodes itself
        lean_decode.warm(cls)


def start_warming() -> None:
    threading.Thread(target=warm_messages, name="podrt-warm", daemon=True).start()
