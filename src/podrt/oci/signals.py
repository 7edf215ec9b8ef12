"""Signal names as images, the kubelet and runc write them.

An image's StopSignal may be "SIGTERM", "TERM", "15" or "SIGRTMIN+3"
(Docker's names for the real-time signals, which CRI's Signal enum spells
SIGRTMINPLUS3); runc's `kill` knows only the names of signals 1 to 31, so a
signal goes to it as a number. The real-time range is glibc's (34 to 64), as
in Docker, containerd and Python's signal module.
"""

from __future__ import annotations

import signal as signal_mod

RTMIN, RTMAX = int(signal_mod.SIGRTMIN), int(signal_mod.SIGRTMAX)
_RT_HALF = 15  # SIGRTMIN+1..+15, then SIGRTMAX-14..-1: the names Docker and CRI use


def canonical(text: str) -> str | None:
    """"SIGTERM" or "SIGRTMIN+3" for any way of writing a Linux signal; None
    for what is none."""
    num = number(text)
    if num is None:
        return None
    if num < RTMIN:
        name = text.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        return name if hasattr(signal_mod, name) else signal_mod.Signals(num).name  # keeps SIGCLD, SIGIOT, SIGPOLL
    if num <= RTMIN + _RT_HALF:
        return "SIGRTMIN" + (f"+{num - RTMIN}" if num > RTMIN else "")
    return "SIGRTMAX" + (f"-{RTMAX - num}" if num < RTMAX else "")


def number(text: str) -> int | None:
    """The signal's number, or None when `text` names no signal (1 to SIGRTMAX)."""
    name = text.strip().upper()
    if name.isascii() and name.isdigit():
        num = int(name)
        return num if 1 <= num <= RTMAX and (num >= RTMIN or _known(num)) else None
    name = name.removeprefix("SIG")
    for base, value, sign in (("RTMIN", RTMIN, 1), ("RTMAX", RTMAX, -1)):
        if name == base:
            return value
        if name.startswith(base) and name[len(base):len(base) + 1] in "+-" and name[len(base) + 1:].isdigit():
            offset = int(name[len(base) + 1:]) * (1 if name[len(base)] == "+" else -1)
            return value + offset if offset * sign > 0 and RTMIN <= value + offset <= RTMAX else None
    named = getattr(signal_mod, f"SIG{name}", None)
    return int(named) if isinstance(named, signal_mod.Signals) and int(named) < RTMIN else None


def _known(num: int) -> bool:
    try:
        signal_mod.Signals(num)
    except ValueError:
        return False
    return True
