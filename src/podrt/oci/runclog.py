"""runc's error messages, from its stderr or its --log file, as one line:
what OciRuntime and the streaming exec (execproc) report when runc fails."""

from __future__ import annotations

import json
import re

MAX_MESSAGE = 1000
_LOGRUS_LINE = re.compile(r'level=(\w+)\s+msg="((?:[^"\\]|\\.)*)"')


def runc_error_text(stderr: bytes | str) -> str:
    """runc's error messages from its stderr, as one line.

    Lines are JSON (``--log-format json``) or logrus text; error and fatal
    messages are preferred, any other non-empty line is the fallback.
    """
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    errors: list[str] = []
    others: list[str] = []
    for line in text.splitlines():
        level, msg = _decode_log_line(line.strip())
        if msg:
            (errors if level in ("error", "fatal", "panic") else others).append(msg)
    joined = "; ".join(errors or others)
    joined = " ".join(joined.split())
    return joined if len(joined) <= MAX_MESSAGE else joined[: MAX_MESSAGE - 3] + "..."


def _decode_log_line(line: str) -> tuple[str, str]:
    if line.startswith("{"):
        try:
            doc = json.loads(line)
            return str(doc.get("level", "")), str(doc.get("msg", ""))
        except (ValueError, AttributeError):
            pass
    match = _LOGRUS_LINE.search(line)
    if match:
        return match.group(1), match.group(2).encode().decode("unicode_escape", errors="replace")
    return "", line
