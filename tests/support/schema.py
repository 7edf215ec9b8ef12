"""Parse the CRI wire schema listing (../shared/cri-v1-schema.txt) and our proto
file, so tests can hold the generated code to them."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "cri-v1-schema.txt"
PROTO = REPO / "proto" / "api.proto"


def schema_rpcs(text: str) -> dict[str, set[str]]:
    """service -> RPC names, from the schema listing."""
    out: dict[str, set[str]] = {}
    service = None
    for line in text.splitlines():
        m = re.match(r"service (\w+)$", line)
        if m:
            service = m.group(1)
            out[service] = set()
            continue
        m = re.match(r"\s+rpc (\w+)\(", line)
        if m and service:
            out[service].add(m.group(1))
        elif not line.startswith(" "):
            service = None
    return out


def proto_rpcs(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.S):
        out[service] = set(re.findall(r"rpc (\w+)\(", body))
    return out


def schema_fields(text: str) -> dict[str, dict[str, int]]:
    """message path (Outer.Inner for nested) -> {field name: number}."""
    out: dict[str, dict[str, int]] = {}
    stack: list[tuple[int, str, str]] = []  # (indent, kind, name)
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", "package")):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        m = re.match(r"\s*(service|message|enum) (\w+)$", line)
        if m:
            stack.append((indent, m.group(1), m.group(2)))
            if m.group(1) == "message":
                out[".".join(n for _, k, n in stack)] = {}
            continue
        m = re.match(r"\s*(\d+) (?:map<\w+, \w+>|repeated \S+|\S+) (\w+)$", line)
        if m and stack and stack[-1][1] == "message":
            out[".".join(n for _, k, n in stack)][m.group(2)] = int(m.group(1))
    return out
