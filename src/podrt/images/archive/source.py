"""Reading an image archive: a directory or a tar file (plain or compressed),
whose member names may not lead out of it, and whose JSON members are small."""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
import zlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import IO, Any, Protocol

from podrt.images.blobs import digest_of, parse_digest
from podrt.images.unpack import lexical_parts

MAX_JSON = 8 << 20  # an index, manifest or config is small; a bigger one is not one
_CHUNK = 1 << 20
_MAX_LINK_HOPS = 16
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


class Problem(Exception):
    """What is wrong inside the archive; turned into InvalidArgument naming it."""


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def normalise(name: str, base: str = "") -> str:
    """`name` (relative to the archive dir `base`) as a clean path inside the
    archive; '..' may not climb out and an absolute name is outside already."""
    parts = None if name.startswith("/") else lexical_parts(name, tuple(p for p in base.split("/") if p not in ("", ".")))
    if parts is None:
        raise Problem(f"path {name!r} escapes the archive")
    return "/".join(parts)


class Source(Protocol):
    def has(self, name: str) -> bool: ...

    def open(self, name: str) -> tuple[IO[bytes], int]: ...

    def close(self) -> None: ...


def open_source(path: Path) -> Source:
    if path.is_dir():
        return _DirSource(path)
    if not path.exists():
        raise Problem("no such file or directory")
    return _TarSource(path)


class _DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        target = (self.root / normalise(name)).resolve()
        if not target.is_relative_to(self.root):  # through a symlink of the dir
            raise Problem(f"path {name!r} escapes the archive (it leads to {target})")
        return target

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> tuple[IO[bytes], int]:
        target = self._path(name)
        if not target.is_file():
            raise Problem(f"{name} is missing (or not a file)")
        f = open(target, "rb")
        return f, os.fstat(f.fileno()).st_size

    def close(self) -> None:
        pass


class _TarSource:
    """Random access to a tar file's members ('r:*': plain, gzip, bzip2 or xz);
    links between members are followed inside the archive only (old docker
    save archives make a repeated layer.tar a symlink to the first)."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")
        except OSError as exc:
            raise Problem(exc.strerror or str(exc)) from None
        except READ_ERRORS:  # its message lists every decompressor tried, over several lines
            raise Problem("not an image archive (a tar file, optionally compressed, or a directory)") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self.tar:
                try:
                    name = normalise(member.name.lstrip("/"))
                except Problem:
                    continue  # nothing can name it
                if name:
                    self.members[name] = member  # a later entry wins, as in tar
        except READ_ERRORS as exc:
            self.tar.close()
            raise Problem(f"unreadable tar archive: {one_line(exc)}") from None

    def _member(self, name: str) -> tarfile.TarInfo | None:
        current = normalise(name)
        for _ in range(_MAX_LINK_HOPS):
            member = self.members.get(current)
            if member is None or member.isreg():
                return member
            if member.issym():
                current = normalise(member.linkname, current.rpartition("/")[0])
            elif member.islnk():
                current = normalise(member.linkname.lstrip("/"))
            else:
                raise Problem(f"{name} is not a regular file")
        raise Problem(f"{name}: too many levels of links")

    def has(self, name: str) -> bool:
        return self._member(name) is not None

    def open(self, name: str) -> tuple[IO[bytes], int]:
        member = self._member(name)
        if member is None:
            raise Problem(f"{name} is missing")
        f = self.tar.extractfile(member)
        assert f is not None  # a regular file
        return f, member.size

    def close(self) -> None:
        self.tar.close()


# --- members -------------------------------------------------------------------


def _read_small(source: Source, name: str) -> bytes:
    f, size = source.open(name)
    with f:
        if size > MAX_JSON:
            raise Problem(f"{name} is {size} bytes, more than the {MAX_JSON} a manifest or config may have")
        try:
            return f.read()
        except READ_ERRORS as exc:
            raise Problem(f"reading {name}: {one_line(exc)}") from None


async def read_json(source: Source, name: str, digest: str | None = None,
                    size: int | None = None) -> tuple[bytes, Any]:
    """A small member, parsed; checked against `digest` and `size` when given."""
    data = await asyncio.to_thread(_read_small, source, name)
    if digest is not None:
        seen = digest_of(data)
        if seen != digest:
            raise Problem(f"blob {name} has digest {seen}, not the {digest} it is named by")
    if size is not None and len(data) != size:
        raise Problem(f"blob {name} is {len(data)} bytes, its descriptor says {size}")
    try:
        return data, json.loads(data)
    except ValueError as exc:
        raise Problem(f"{name} is not valid JSON: {exc}") from None


async def chunks(source: Source, name: str) -> AsyncGenerator[bytes, None]:
    """A member's bytes, read in a thread a chunk at a time."""
    f, _size = await asyncio.to_thread(source.open, name)
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(f.read, _CHUNK)
            except READ_ERRORS as exc:
                raise Problem(f"reading {name}: {one_line(exc)}") from None
            if not chunk:
                return
            yield chunk
    finally:
        f.close()


def blob_name(desc: Any) -> tuple[str, str, int]:
    """(member path, digest, size) of an OCI descriptor."""
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) or not isinstance(desc.get("size"), int):
        raise Problem(f"malformed descriptor {json.dumps(desc)[:200]}")
    try:
        hex_ = parse_digest(desc["digest"])
    except ValueError as exc:
        raise Problem(str(exc)) from None
    return f"blobs/sha256/{hex_}", desc["digest"], desc["size"]
