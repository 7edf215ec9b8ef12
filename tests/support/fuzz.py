"""Fuzzed CRI request bodies for every RPC of RuntimeService and ImageService,
and a driver that sends them as raw bytes to a daemon and collects the answers.

Bodies come from a seeded `random.Random`: garbage bytes, empty bodies,
truncated encodings, fields sent with the wrong wire type, random messages
built by walking the betterproto dataclasses (our own wire encoder, so enum,
int32 and uint32 fields can carry values betterproto would refuse to write),
and valid templates with one field mutated.

SAFETY RULE: no request may make the daemon contact a host other than
loopback, nor touch host paths outside the fuzzer's scratch dir.
  * Every image reference (ImageSpec.image and any string field whose name
    holds "image") is malformed ('', 'UPPER/Case', '::', 'a@sha256:zz', ...)
    or names a closed port on loopback ('127.0.0.1:1/fuzz/img:tag').
  * AuthConfig.server_address is empty, garbage or 127.0.0.1:1; DNS servers are
    127.0.0.x or garbage; port mapping host_ip is '' or 127.0.0.1, and host_port
    is out of range or one of HOST_PORTS (free ports, so a pod's DNAT rule hijacks nothing).
  * Host-side paths (log_directory, *_path, localhost_ref, location) are
    relative (refused) or inside the scratch dir; cgroup parents come from a list.
  * PullImage bodies are never garbage, truncated or wrong-wire bytes, nor
    random strings: always messages built (random or mutated) with safe references.
`Fuzzer.enforce` is the one function that rewrites every built message (and so
every PullImage and ImageSpec) to obey the rule; `Fuzzer.is_safe_body` checks
the same predicates on the decoded form of every body before it is sent.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import os
import random
import re
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import betterproto
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError
from h2.exceptions import StreamClosedError

from podrt.api.runtime import v1 as cri

Node = dict[Any, Any]  # field name -> value (messages: nested Nodes; maps: lists of (key, value)); int keys: unknown fields

MAX_DEPTH = 4
MAX_BODY = 512 * 1024
MAX_MESSAGES = 400  # per body: repeated fields of repeated messages would otherwise grow as 300**depth


@dataclass(frozen=True)
class Rpc:
    path: str
    request: type[betterproto.Message]
    reply: type[betterproto.Message]
    cardinality: Cardinality

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


def _rpcs() -> tuple[Rpc, ...]:
    """Every RPC of both services, from the generated servicer tables."""
    out = []
    for base in (cri.RuntimeServiceBase, cri.ImageServiceBase):
        for path, h in base().__mapping__().items():
            out.append(Rpc(path, h.request_type, h.reply_type, h.cardinality))
    return tuple(out)


RPCS = _rpcs()
PULL_IMAGE = "/runtime.v1.ImageService/PullImage"


@dataclass(frozen=True)
class WrongWire:
    """A field sent with a wire type its schema does not have."""

    wire_type: int
    payload: bytes


# --- the wire encoder -------------------------------------------------------

_VARINT = {"int32", "int64", "uint32", "uint64", "bool", "enum", "sint32", "sint64"}
_FIXED = {"double": (1, "<d"), "float": (5, "<f"), "fixed64": (1, "<Q"), "sfixed64": (1, "<q"),
          "fixed32": (5, "<I"), "sfixed32": (5, "<i")}


def _varint(v: int) -> bytes:
    v %= 1 << 64  # negatives as 64-bit two's complement, like protobuf; 2**64+ wraps
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _ld(number: int, data: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(data)) + data


def _scalar(ptype: str, v: Any) -> tuple[int, bytes]:
    """(wire type, payload) of one scalar."""
    if ptype in _VARINT:
        return 0, _varint(int(v))
    if ptype in _FIXED:
        wt, fmt = _FIXED[ptype]
        size = struct.calcsize(fmt)
        return wt, struct.pack(fmt, float(v)) if ptype in ("double", "float") else (int(v) % (1 << 8 * size)).to_bytes(size, "little")
    data = v.encode("utf-8", "surrogatepass") if isinstance(v, str) else bytes(v)
    return 2, _varint(len(data)) + data


def _one(number: int, ptype: str, sub: Any, v: Any) -> bytes:
    if isinstance(v, WrongWire):
        return _tag(number, v.wire_type) + v.payload
    if ptype == "message":
        return _ld(number, encode(sub, v))
    wt, payload = _scalar(ptype, v)
    return _tag(number, wt) + payload


def encode(cls: type[betterproto.Message], node: Node) -> bytes:
    """Protobuf bytes of `node` as a `cls`; values need not be in range."""
    meta, subs = cls._betterproto.meta_by_field_name, cls._betterproto.cls_by_field
    out = bytearray()
    for name, v in node.items():
        if isinstance(name, int):  # a field number the schema does not have
            out += _tag(name, v.wire_type) + v.payload
            continue
        m = meta[name]
        if isinstance(v, WrongWire):
            out += _one(m.number, m.proto_type, None, v)
        elif m.proto_type == "map":
            kt, vt = m.map_types
            for k, val in v:
                out += _ld(m.number, _one(1, kt, None, k) + _one(2, vt, subs.get(f"{name}.value"), val))
        elif isinstance(v, list):
            if v and m.proto_type in _VARINT | set(_FIXED) and not any(isinstance(x, WrongWire) for x in v):
                out += _ld(m.number, b"".join(_scalar(m.proto_type, x)[1] for x in v))  # packed
            else:
                out += b"".join(_one(m.number, m.proto_type, subs.get(name), x) for x in v)
        else:
            out += _one(m.number, m.proto_type, subs.get(name), v)
    return bytes(out)


def _is_repeated(cls: type[betterproto.Message], name: str) -> bool:
    return getattr(cls._type_hint(name), "__origin__", None) is list


# --- values -----------------------------------------------------------------

_INTS = (0, 1, -1, 2, 99, 255, 65535, 65536, 2**31 - 1, -(2**31), 2**31, 2**32 - 1, 2**32, 2**63 - 1, -(2**63), 2**64 - 1)
_BAD_ENUMS = (99, -1, 2**31 - 1, -(2**31), 2**32, 2**63 - 1)
_DOUBLES = (0.0, -0.0, 1.5, -1.0, 1e308, float("inf"), float("-inf"), float("nan"), 5e-324)
_FRAGMENTS = ("", "a", "-", ".", "..", "../", "../../etc/passwd", ";", "=", "a=b;c=d", "\x00", "\n", "\r\n", " ", "\t",
              "/", "\\", "%s%n", "${HOME}", "$(id)", "`id`", "'", '"', "#", "*", "ü", "ß", "日本", "😀", "\u202e",
              "\ufeff", "\U0010ffff", "A" * 70, "x" * 254, "UPPER", "k8s_x_y_z_0", "net.ipv4.tcp_syncookies")


class Fuzzer:
    """Seeded generator of (rpc, kind, body); `known_ids` are pod ids the
    driver saw created, mixed into *_id fields so real pods get hit too."""

    KINDS = ("garbage", "empty", "truncated", "wrong_wire", "random", "mutated")
    WEIGHTS = (12, 4, 12, 12, 30, 30)
    MALFORMED_IMAGES = ("", "UPPER/Case", "::", "a@sha256:zz", "-x", "a b", "../../etc/passwd", "a//b", ":tag",
                        "127.0.0.1:1/UPPER", "127.0.0.1:1/fuzz/img@sha256:" + "0" * 63, "@", "a:b:c:d", "\x00")
    LOOPBACK_IMAGE = re.compile(r"127\.0\.0\.1:1/fuzz/[a-z0-9]{1,64}(:[a-z0-9]{1,16}|@sha256:[0-9a-f]{64})?")
    HOST_PORTS = tuple(range(18081, 18090))
    SERVER_ADDRESSES = ("", "127.0.0.1:1", "http://127.0.0.1:1", "::", "\x00", "a b")
    CGROUP_PARENTS = ("", "/podrt-fuzz", "x.slice", "/a/../b", "relative", "/../..", "a b", "/\x00")
    SYSCTL_KEYS = ("net.ipv4.tcp_syncookies", "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.core.somaxconn",
                   "vm.swappiness", "kernel.foo", "net..x", "x", "", "net.ipv4/../../x")

    def __init__(self, seed: int, scratch: Path) -> None:
        self.rng = random.Random(seed)
        self.scratch = os.path.normpath(scratch)
        self.known_ids: list[str] = []
        self.counter = 0
        self.budget = MAX_MESSAGES  # messages the body being built may still hold

    # -- the safety rule --

    def _rule(self, name: str) -> tuple[Callable[[Any], bool], Callable[[], Any]] | None:
        """(is safe, make a safe value) for a scalar field that could reach outside, else None."""
        r = self.rng
        if name == "host_port":
            # int32 on the wire: a wider value would arrive as its low 32 bits
            return (lambda v: isinstance(v, int) and -(2**31) <= v < 2**31 and (not 1 <= v <= 65535 or v in self.HOST_PORTS)), \
                lambda: r.choice((*self.HOST_PORTS, 0, -1, 65536, 2**31 - 1, -(2**31)))
        if "image" in name:
            return self.is_safe_image, lambda: r.choice((
                r.choice(self.MALFORMED_IMAGES),
                f"127.0.0.1:1/fuzz/{self._token()}:{self._token()}",
                f"127.0.0.1:1/fuzz/{self._token()}@sha256:{r.randbytes(32).hex()}"))
        if name == "server_address":
            return (lambda v: isinstance(v, str) and v in self.SERVER_ADDRESSES), lambda: r.choice(self.SERVER_ADDRESSES)
        if name == "servers":
            return self._is_loopback_or_garbage, lambda: r.choice(
                (f"127.0.0.{r.randint(0, 255)}", "::1", "", "x", "999.1.1.1", "127.0.0.1\nnameserver 127.0.0.2"))
        if name == "host_ip":
            return (lambda v: isinstance(v, str) and v in ("", "127.0.0.1")), lambda: r.choice(("", "127.0.0.1"))
        if name == "cgroup_parent":
            return (lambda v: isinstance(v, str) and v in self.CGROUP_PARENTS), lambda: r.choice(self.CGROUP_PARENTS)
        if name.endswith(("_path", "_directory")) or name in ("localhost_ref", "location"):
            return self.is_safe_path, self._path
        return None

    def is_safe_image(self, ref: Any) -> bool:
        return isinstance(ref, str) and (ref in self.MALFORMED_IMAGES or bool(self.LOOPBACK_IMAGE.fullmatch(ref)))

    @staticmethod
    def _is_loopback_or_garbage(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ipaddress.ip_address(v).is_loopback
        except ValueError:
            return not re.search(r"[A-Za-z0-9-]\.[A-Za-z]", v)  # garbage, but nothing host-name like (a.b)

    def is_safe_path(self, p: Any) -> bool:
        """Relative (the daemon refuses it) or inside scratch, also after '..'."""
        if not isinstance(p, str):
            return False
        p = p.removeprefix("localhost/")  # the deprecated seccomp_profile_path form
        return not p.startswith("/") or (os.path.normpath(p) + "/").startswith(self.scratch + "/")

    def _path(self) -> str:
        """Under scratch/d1/d2/d3 with at most three '..': never leaves scratch."""
        r = self.rng
        if r.random() < 0.3:
            return r.choice(("", "relative/x", "../x", "runtime/default", "a\x00b"))
        segs = [r.choice(("x", "..", "a b", "ü", ";", "=", ".", "\n", self._token())) for _ in range(r.randint(0, 3))]
        return "/".join([self.scratch, "d1", "d2", "d3", *segs])

    def enforce(self, cls: type[betterproto.Message], node: Node) -> Node:
        """Rewrite, in place and recursively, every value the safety rule forbids."""
        meta, subs = cls._betterproto.meta_by_field_name, cls._betterproto.cls_by_field
        for name, v in node.items():
            if isinstance(name, int):
                continue  # unknown fields: the daemon's decoder skips them
            m = meta[name]
            if m.proto_type == "message":
                for sub in v if isinstance(v, list) else [v]:
                    if isinstance(sub, dict):
                        self.enforce(subs[name], sub)
            elif m.proto_type == "map" and m.map_types[1] == "message":
                for _, sub in v:
                    if isinstance(sub, dict):
                        self.enforce(subs[f"{name}.value"], sub)
            elif m.proto_type != "map" and (rule := self._rule(name)):
                ok, make = rule
                fix = lambda x, ok=ok, make=make: x if ok(x) else make()  # noqa: E731
                node[name] = [fix(x) for x in v] if isinstance(v, list) else fix(v)
        return node

    def _is_safe_message(self, msg: betterproto.Message) -> bool:
        for f in msg._betterproto.meta_by_field_name:
            v = getattr(msg, f)
            items = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else [v]
            for x in items:
                if isinstance(x, betterproto.Message):
                    if not self._is_safe_message(x):
                        return False
                elif (rule := self._rule(f)) and x not in ("", 0) and not rule[0](x):
                    return False
        return True

    def is_safe_body(self, rpc: Rpc, body: bytes) -> bool:
        """What the daemon would decode from `body` obeys the rule (or does not decode)."""
        try:
            msg = rpc.request().parse(body)
        except Exception:
            return True  # the daemon's decoder (the same library) refuses it too: it reaches nothing
        return self._is_safe_message(msg)

    # -- values --

    def _token(self) -> str:
        return "".join(self.rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=self.rng.randint(1, 12)))

    def _string(self, name: str) -> str | bytes:
        r = self.rng
        if name.endswith("id") and self.known_ids and r.random() < 0.4:
            pid = r.choice(self.known_ids)
            return pid[: r.choice((64, 64, 12, 1))]
        if name == "runtime_handler" and r.random() < 0.5:
            return r.choice(("runc", ""))  # the one handler the test daemons know
        roll = r.random()
        if roll < 0.3:
            return f"fuzz-{self._token()}"
        if roll < 0.35:
            return b"\xff\xfe" + r.randbytes(r.randint(0, 8))  # invalid UTF-8
        if roll < 0.39:
            return r.choice(("A", "ü", "/..", "x")) * r.randint(4096, 65536)  # huge
        if roll < 0.52:
            return "".join(chr(r.choice((r.randint(1, 0x7F), r.randint(0x80, 0xD7FF), r.randint(0xE000, 0x10FFFF))))
                           for _ in range(r.randint(1, 20)))
        return "".join(r.choices(_FRAGMENTS, k=r.randint(1, 4)))

    def _int(self) -> int:
        r = self.rng
        return r.choice(_INTS) if r.random() < 0.6 else r.randint(-(2**63), 2**64 - 1) >> r.randint(0, 63)

    def _scalar_value(self, cls: type[betterproto.Message], name: str, ptype: str, enum_key: str) -> Any:
        r = self.rng
        if ptype == "enum":
            enum_cls = cls._betterproto.cls_by_field[enum_key]
            return r.choice(list(enum_cls)).value if r.random() < 0.6 else r.choice(_BAD_ENUMS)
        if ptype == "bool":
            return r.choice((0, 1, 1, 2, 2**63 - 1))  # >1 is out of range for a bool
        if ptype in ("double", "float"):
            return r.choice(_DOUBLES)
        if ptype in ("string", "bytes"):
            return self._string(name) if ptype == "string" else r.randbytes(r.randint(0, 64))
        return self._int()

    def _count(self) -> int:
        r = self.rng
        return r.randint(50, 300) if r.random() < 0.03 else r.randint(0, 3)

    def value(self, cls: type[betterproto.Message], name: str, depth: int) -> Any:
        """A random value for one field (a list for repeated fields)."""
        m, r = cls._betterproto.meta_by_field_name[name], self.rng
        if m.proto_type == "map":
            kt, vt = m.map_types
            key = (lambda: r.choice(self.SYSCTL_KEYS)) if name == "sysctls" and r.random() < 0.7 else (lambda: self._string(name))
            sub = cls._betterproto.cls_by_field.get(f"{name}.value")
            val = (lambda: self.message(sub, depth + 1)) if vt == "message" else (lambda: self._scalar_value(cls, name, vt, f"{name}.value"))
            if kt != "string":
                key = self._int  # type: ignore[assignment]
            return [(key(), val()) for _ in range(self._count())]
        one = (lambda: self.message(cls._betterproto.cls_by_field[name], depth + 1)) if m.proto_type == "message" \
            else (lambda: self._scalar_value(cls, name, m.proto_type, name))
        if _is_repeated(cls, name):
            return [one() for _ in range(self._count())]
        return one()

    def message(self, cls: type[betterproto.Message], depth: int = 0) -> Node:
        """A random message: each field present with some chance, depth bounded."""
        self.budget -= 1
        if depth >= MAX_DEPTH or self.budget <= 0:
            return {}
        return {n: self.value(cls, n, depth) for n in cls._betterproto.meta_by_field_name if self.rng.random() < 0.4}

    def _wrong_wire(self, ptype: str | None) -> WrongWire:
        """Any wire type but the field's own (`ptype` None: any at all, for unknown fields)."""
        right = None if ptype is None else 2 if ptype in ("string", "bytes", "message", "map") else 0 if ptype in _VARINT else _FIXED[ptype][0]
        wt = self.rng.choice([w for w in (0, 1, 2, 3, 4, 5, 6, 7) if w != right])
        payload = {0: _varint(self._int()), 1: self.rng.randbytes(8), 5: self.rng.randbytes(4),
                   2: _varint(n := self.rng.randint(0, 20)) + self.rng.randbytes(n)}.get(wt, b"")
        return WrongWire(wt, payload)

    def mutate(self, cls: type[betterproto.Message], node: Node, wrong_wire: bool = False, depth: int = 0) -> Node:
        """Replace one field somewhere in `node` (descending at random) by a random
        value, or by one with the wrong wire type."""
        r, names = self.rng, list(cls._betterproto.meta_by_field_name)
        if not names or r.random() < 0.05:
            node[r.choice((r.randint(1, 99), 2**29 - 1))] = self._wrong_wire(None)
            return node
        name = r.choice(names)
        m = cls._betterproto.meta_by_field_name[name]
        if m.proto_type == "message" and not _is_repeated(cls, name) and depth < MAX_DEPTH and r.random() < 0.6:
            sub = node.get(name)
            node[name] = self.mutate(cls._betterproto.cls_by_field[name], sub if isinstance(sub, dict) else {}, wrong_wire, depth + 1)
        elif wrong_wire:
            node[name] = self._wrong_wire(m.proto_type)
        else:
            node[name] = self.value(cls, name, depth)
        return node

    def template(self, rpc: Rpc) -> Node:
        """A valid request to mutate: a pod the daemon would run, a known id, a safe image."""
        r, tok = self.rng, self._token()
        if rpc.request is cri.RunPodSandboxRequest:
            return {"config": {"metadata": {"name": f"fz-{tok}", "uid": r.randbytes(16).hex(), "namespace": "fuzz"},
                               "linux": {"security_context": {"namespace_options": {}}}}}
        node: Node = {}
        meta = rpc.request._betterproto.meta_by_field_name
        for name in ("pod_sandbox_id", "container_id"):
            if name in meta and self.known_ids:
                node[name] = r.choice(self.known_ids)
        if "image" in meta:
            node["image"] = {"image": f"127.0.0.1:1/fuzz/{tok}:latest"}
        return node

    # -- bodies --

    def body(self, rpc: Rpc) -> tuple[str, bytes]:
        """(kind, body) of one request to `rpc`; every body obeys the safety rule."""
        r, req = self.rng, rpc.request
        kind = r.choices(self.KINDS, self.WEIGHTS)[0]
        if rpc.path == PULL_IMAGE:
            kind = r.choice(("random", "mutated"))
        for _ in range(20):
            self.budget = MAX_MESSAGES
            if kind == "garbage":
                body = r.randbytes(r.randint(1, 200))
            elif kind == "empty":
                body = b""
            elif kind == "wrong_wire":
                body = encode(req, self.enforce(req, self.mutate(req, self.template(rpc), wrong_wire=True)))
            elif kind == "truncated":
                full = encode(req, self.enforce(req, self.mutate(req, self.template(rpc))))
                body = full[: r.randrange(len(full))] if full else r.randbytes(3)
            elif kind == "random":
                body = encode(req, self.enforce(req, self.message(req)))
            else:
                body = encode(req, self.enforce(req, self.mutate(req, self.template(rpc))))
            if len(body) <= MAX_BODY and self.is_safe_body(rpc, body):
                return kind, body
            kind = "random"  # a raw body that decodes to something unsafe: build one instead
        raise RuntimeError(f"no safe body for {rpc.path}")  # pragma: no cover

    def next(self) -> tuple[Rpc, str, bytes]:
        """Round robin over the RPCs, so each gets count/len(RPCS) requests."""
        rpc = RPCS[self.counter % len(RPCS)]
        self.counter += 1
        return (rpc, *self.body(rpc))


# --- the driver -------------------------------------------------------------


class RawCodec(CodecBase):
    """Bytes in, bytes out: the fuzzer's bodies go on the wire untouched."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message  # type: ignore[no-any-return]

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


BAD_STATUSES = ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "NO_ANSWER")


@dataclass
class Offender:
    path: str
    status: str
    message: str
    body: bytes
    kind: str

    def __str__(self) -> str:
        return f"{self.path} [{self.kind}] {self.status}: {self.message[:300]!r} body={self.body[:120].hex()}{'...' if len(self.body) > 120 else ''} ({len(self.body)} bytes)"


@dataclass
class FuzzResult:
    sent: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    by_rpc: Counter[tuple[str, str]] = field(default_factory=Counter)
    offenders: list[Offender] = field(default_factory=list)
    slowest: list[tuple[float, str, str, str]] = field(default_factory=list)  # (seconds, rpc, kind, status), top 5

    def distinct(self) -> dict[tuple[str, str, str], tuple[int, Offender]]:
        """Offenders grouped by (rpc, status, message with numbers blanked): count and first example."""
        out: dict[tuple[str, str, str], tuple[int, Offender]] = {}
        for o in self.offenders:
            key = (o.path, o.status, re.sub(r"[0-9a-f]{12,}|\d+", "N", o.message)[:200])
            n, first = out.get(key, (0, o))
            out[key] = (n + 1, first)
        return out


async def send(channel: Channel, rpc: Rpc, body: bytes, timeout: float) -> tuple[str, str, bytes | None]:
    """(status name, message, first reply) of one raw call."""
    try:
        async with channel.request(rpc.path, rpc.cardinality, bytes, bytes, timeout=timeout) as stream:  # type: ignore[type-var]
            await stream.send_message(body, end=True)
            if rpc.cardinality is Cardinality.UNARY_STREAM:  # GetContainerEvents never ends: its headers are the answer
                await stream.recv_initial_metadata()  # raises a refusal sent as trailers only
                try:
                    await stream.cancel()
                except StreamClosedError:  # a finite stream (the Stream* RPCs) may be over already
                    pass
                return "OK", "", None
            first = await stream.recv_message()
        return "OK", "", first  # type: ignore[return-value]
    except GRPCError as err:
        return err.status.name, err.message or "", None
    except TimeoutError:
        return "DEADLINE_EXCEEDED", f"no answer in {timeout}s", None
    except Exception as exc:  # a reset stream, a closed connection: the daemon gave no gRPC answer
        return "NO_ANSWER", f"{type(exc).__name__}: {exc}", None


async def _replay_lost(sock: Path, lost: list[tuple[Rpc, Offender]], result: FuzzResult, timeout: float) -> None:
    """A lost connection loses every call on it: replay each alone on a new
    connection; those answered then were bystanders of the one that broke it."""
    for rpc, offender in lost:
        channel = Channel(path=str(sock), codec=RawCodec())
        try:
            status, message, _ = await send(channel, rpc, offender.body, timeout)
        finally:
            channel.close()
        if status in BAD_STATUSES:
            offender.message += f" (replayed alone: {status} {message})"
        else:
            result.offenders.remove(offender)
            result.statuses["NO_ANSWER"] -= 1
            result.statuses["LOST_WITH_ANOTHER_CALL"] += 1
            result.by_rpc[(rpc.name, "NO_ANSWER")] -= 1
            result.by_rpc[(rpc.name, "LOST_WITH_ANOTHER_CALL")] += 1


async def run_fuzz(sock: Path, fuzzer: Fuzzer, count: int, *, concurrency: int = 4, timeout: float = 60.0,
                   batch: int = 1000, between_batches: Callable[[], Awaitable[None]] | None = None,
                   progress: Callable[[FuzzResult], None] | None = None) -> FuzzResult:
    """Send `count` fuzzed requests, `concurrency` at a time; after each `batch`
    call `between_batches` (removing pods keeps the IP range from running out)."""
    result = FuzzResult()
    channel = Channel(path=str(sock), codec=RawCodec())
    started = time.perf_counter()
    try:
        async def worker(queue: Iterator[tuple[Rpc, str, bytes]]) -> None:
            for rpc, kind, body in queue:
                t = time.perf_counter()
                status, message, reply = await send(channel, rpc, body, timeout)
                result.slowest = heapq.nlargest(5, [*result.slowest, (time.perf_counter() - t, rpc.name, kind, status)])
                result.statuses[status] += 1
                result.by_rpc[(rpc.name, status)] += 1
                if status in BAD_STATUSES:
                    result.offenders.append(Offender(rpc.path, status, message, body, kind))
                    if status == "NO_ANSWER":
                        lost.append((rpc, result.offenders[-1]))
                if rpc.request is cri.RunPodSandboxRequest and reply is not None:
                    fuzzer.known_ids.append(cri.RunPodSandboxResponse().parse(reply).pod_sandbox_id)

        while result.sent < count:
            todo = [fuzzer.next() for _ in range(min(batch, count - result.sent))]
            queue = iter(todo)  # shared: each worker takes the next request
            lost: list[tuple[Rpc, Offender]] = []
            await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
            await _replay_lost(sock, lost, result, timeout)
            result.sent += len(todo)
            if between_batches is not None:
                await between_batches()
            if progress is not None:
                progress(result)
    finally:
        channel.close()
        result.seconds = time.perf_counter() - started
    return result
