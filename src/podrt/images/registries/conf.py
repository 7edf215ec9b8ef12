"""Reading containers-registries.conf(5) v2 (and the deprecated v1 format)
with its drop-ins, by containers/image's rules, into a RegistriesConf."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

from podrt.config import ConfigError
from podrt.errors import InvalidArgument
from podrt.images.registries.lookup import PULL_FROM_MIRROR, Mirror, RegistriesConf, Registry
from podrt.oci import reference

log = logging.getLogger(__name__)

DEFAULT_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
_HOST_PORT = re.compile(  # docker/distribution's DomainRegexp
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")

# Keys containers/image reads that podrt has no use for: accepted silently.
_IGNORED_TOP = {"credential-helpers", "short-name-mode", "additional-layer-store-auth-helper"}
_TOP_KEYS = {"registry", "unqualified-search-registries", "aliases", "registries"} | _IGNORED_TOP
_REGISTRY_KEYS = {"prefix", "location", "insecure", "blocked", "mirror",
                  "mirror-by-digest-only", "pull-from-mirror"}
_MIRROR_KEYS = {"location", "insecure", "pull-from-mirror"}
_V1_KEYS = ("search", "insecure", "block")


class _Invalid(ValueError):
    """A problem inside one file; ``_load_file`` prefixes the file name."""


def load(path: Path = DEFAULT_REGISTRIES_CONF, dropin_dir: Path | None = None) -> RegistriesConf:
    """Read ``path`` (may be absent) and then ``<dropin_dir>/*.conf`` by name.

    ``dropin_dir`` defaults to ``<path>.d``. A drop-in's ``[[registry]]`` replaces
    the entry with the same prefix; ``unqualified-search-registries``, when a
    file sets it (even to ``[]``), replaces the list; ``[aliases]`` merge key by
    key, later files win and ``""`` removes an alias. Only the main file may
    use the deprecated v1 format. Raises a one-line ConfigError naming the file.
    """
    dropin_dir = dropin_dir if dropin_dir is not None else path.with_name(path.name + ".d")
    registries: dict[str, Registry] = {}
    search: list[str] = []
    aliases: dict[str, str] = {}
    files: list[Path] = []
    for file, is_dropin in [(path, False)] + [(p, True) for p in _dropins(dropin_dir)]:
        parsed = _load_file(file, dropin=is_dropin)
        if parsed is None:
            continue
        files.append(file)
        registries.update((r.prefix, r) for r in parsed.registries)
        if parsed.search is not None:
            search = parsed.search
        for short, value in parsed.aliases.items():
            if value:
                aliases[short] = value
            else:
                aliases.pop(short, None)
    return RegistriesConf(
        registries=tuple(registries[p] for p in sorted(registries)),
        search_registries=tuple(search),
        aliases=aliases,
        files=tuple(files),
    )


def _dropins(directory: Path) -> list[Path]:
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise ConfigError(f"{directory}: cannot list drop-in directory: {e.strerror or e}") from None
    return sorted((p for p in entries if p.name.endswith(".conf") and not p.is_dir()),
                  key=lambda p: p.name)


@attrs.frozen
class _FileConf:
    registries: list[Registry]
    search: list[str] | None  # None: the file does not set the list
    aliases: dict[str, str]   # "" removes an alias set by an earlier file


def _load_file(path: Path, *, dropin: bool) -> _FileConf | None:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None  # an absent main file, or a drop-in removed while listing
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {' '.join(str(e).splitlines())}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return _parse(path, data, dropin=dropin)
    except _Invalid as e:
        raise ConfigError(f"{path}: {e}") from None


def _parse(path: Path, data: dict[str, Any], *, dropin: bool) -> _FileConf:
    _warn_unknown(path, "", data, _TOP_KEYS)
    if "registries" in data:
        v2_keys = sorted(k for k in data if k != "registries")
        if v2_keys:
            raise _Invalid(f"mixes the v1 format ([registries.*]) with v2 keys ({', '.join(v2_keys)})")
        if dropin:
            raise _Invalid("drop-ins must use the v2 format ([[registry]]), not [registries.*]")
        return _parse_v1(path, data["registries"])

    tables = _get(data, "registry", list, [], "")
    registries = [_parse_registry(path, _table(t, f"[[registry]] #{i + 1}"), i)
                  for i, t in enumerate(tables)]
    _check_conflicts(registries)
    unique: dict[str, Registry] = {}
    for reg in registries:
        if reg.prefix in unique:  # containers/image also keeps the first one
            log.warning("%s: ignoring a second [[registry]] with prefix %s", path, reg.prefix)
        unique.setdefault(reg.prefix, reg)

    search = None
    if "unqualified-search-registries" in data:
        search = [_search_entry(v) for v in
                  _str_list(data["unqualified-search-registries"], "unqualified-search-registries")]
    aliases = {}
    for short, value in _table(data.get("aliases", {}), "[aliases]").items():
        aliases[short] = _parse_alias(short, value)
    return _FileConf(list(unique.values()), search, aliases)


def _parse_v1(path: Path, v1: Any) -> _FileConf:
    """The deprecated v1 ``[registries.search/insecure/block]`` lists, as v2 entries."""
    v1 = _table(v1, "[registries]")
    _warn_unknown(path, "registries.", v1, set(_V1_KEYS))
    lists = {}
    for key in _V1_KEYS:
        section = _table(v1.get(key, {}), f"[registries.{key}]")
        lists[key] = _str_list(section.get("registries", []), f"registries.{key}.registries")
    entries: dict[str, dict[str, bool]] = {}
    for key, flag in (("block", "blocked"), ("insecure", "insecure")):
        for location in lists[key]:
            entries.setdefault(_location(location, f"registries.{key}"), {})[flag] = True
    registries = [Registry(prefix=loc, location=loc, source=path, insecure=flags.get("insecure", False),
                           blocked=flags.get("blocked", False))
                  for loc, flags in entries.items()]
    return _FileConf(registries, [_search_entry(v) for v in lists["search"]], {})


def _parse_registry(path: Path, table: dict[str, Any], index: int) -> Registry:
    where = f"[[registry]] #{index + 1}"
    _warn_unknown(path, f"{where}: ", table, _REGISTRY_KEYS)
    location = _location(_get(table, "location", str, "", where), f"{where}: location")
    prefix = _get(table, "prefix", str, "", where).rstrip("/") or location
    if not prefix:
        raise _Invalid(f"{where}: neither prefix nor location is set")
    where = f'[[registry]] prefix "{prefix}"'
    _check_prefix(prefix, where)
    if not location and not prefix.startswith("*."):
        raise _Invalid(f'{where}: location must be set unless the prefix is a wildcard like "*.example.com"')
    if "pull-from-mirror" in table:
        raise _Invalid(f"{where}: pull-from-mirror belongs in a [[registry.mirror]] table")
    by_digest_only = _get(table, "mirror-by-digest-only", bool, False, where)
    mirrors = []
    for i, m in enumerate(_get(table, "mirror", list, [], where)):
        mwhere = f"{where}: mirror #{i + 1}"
        m = _table(m, mwhere)
        _warn_unknown(path, f"{mwhere}: ", m, _MIRROR_KEYS)
        mlocation = _location(_get(m, "location", str, "", mwhere), f"{mwhere}: location")
        if not mlocation:
            raise _Invalid(f"{mwhere}: location is not set")
        pull_from = _get(m, "pull-from-mirror", str, "", mwhere)
        if pull_from and by_digest_only:
            raise _Invalid(f"{mwhere}: pull-from-mirror cannot be combined with "
                           "the registry's mirror-by-digest-only")
        if pull_from and pull_from not in PULL_FROM_MIRROR:
            raise _Invalid(f'{mwhere}: pull-from-mirror must be "all", "digest-only" or '
                           f'"tag-only", got "{pull_from}"')
        mirrors.append(Mirror(
            location=mlocation,
            insecure=_get(m, "insecure", bool, False, mwhere),
            pull_from_mirror="digest-only" if by_digest_only else (pull_from or "all"),
        ))
    return Registry(
        prefix=prefix,
        location=location,
        source=path,
        insecure=_get(table, "insecure", bool, False, where),
        blocked=_get(table, "blocked", bool, False, where),
        mirrors=tuple(mirrors),
    )


def _check_prefix(prefix: str, where: str) -> None:
    if prefix.startswith(("http://", "https://")):
        raise _Invalid(f"{where}: prefix must be host[:port][/path], not a URL")
    if "*" in prefix:
        rest = prefix[2:]
        if not prefix.startswith("*.") or not rest or any(c in rest for c in "*/:@"):
            raise _Invalid(f'{where}: a wildcard is only allowed as a leading "*." '
                           'with no port or path, e.g. "*.example.com"')


def _check_conflicts(registries: list[Registry]) -> None:
    """Entries for one location must agree on insecure and blocked (as upstream)."""
    seen: dict[str, Registry] = {}
    for reg in registries:
        other = seen.setdefault(reg.location or reg.prefix, reg)
        for flag in ("insecure", "blocked"):
            if getattr(reg, flag) != getattr(other, flag):
                raise _Invalid(f'registry "{reg.location or reg.prefix}" is defined more than once '
                               f"with different {flag} settings")


def _location(value: str, where: str) -> str:
    value = value.rstrip("/")
    if value.startswith(("http://", "https://")):
        raise _Invalid(f'{where}: "{value}" must be host[:port][/path], not a URL')
    if "*" in value:
        raise _Invalid(f'{where}: "{value}" must not contain a wildcard')
    return value


def _search_entry(value: str) -> str:
    value = value.rstrip("/")
    if not _HOST_PORT.fullmatch(value):
        raise _Invalid(f'unqualified-search-registries: "{value}" is not a host[:port]')
    return value


def _parse_alias(short: str, value: Any) -> str:
    """Validate one alias; returns the normalised name, or "" (which removes it)."""
    where = f'[aliases] "{short}"'
    first, slash, _ = short.partition("/")
    if slash and reference.is_domain(first):
        raise _Invalid(f"{where}: an alias name must be a short name, without a registry")
    _check_name(short, where)
    if not isinstance(value, str):
        raise _Invalid(f"{where}: expected a string, got {_toml_type(value)}")
    if not value:
        return ""
    first, slash, _ = value.partition("/")
    if not (slash and reference.is_domain(first)):
        raise _Invalid(f'{where}: "{value}" must be a fully qualified name (registry/repository)')
    return _check_name(value, where)


def _check_name(text: str, where: str) -> str:
    """``text`` parsed as a repository name without tag or digest; its normalised form."""
    if "@" in text or ":" in text.rpartition("/")[2]:
        raise _Invalid(f'{where}: "{text}" must not contain a tag or digest')
    try:
        return reference.parse(text).name
    except InvalidArgument as e:
        raise _Invalid(f"{where}: {e}") from None


def _warn_unknown(path: Path, where: str, table: dict[str, Any], known: set[str]) -> None:
    for key in sorted(set(table) - known):
        log.warning("%s: %signoring unknown key %s", path, where, key)


def _get(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind):
        prefix = f"{where}: " if where else ""
        raise _Invalid(f"{prefix}{key}: expected {_TOML_NAMES[kind]}, got {_toml_type(value)}")
    return value


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where}: expected a table, got {_toml_type(value)}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"{where}: expected an array of strings, got {_toml_type(value)}")
    return value


_TOML_NAMES = {str: "a string", bool: "a boolean", list: "an array", dict: "a table"}


def _toml_type(value: Any) -> str:
    for kind, name in _TOML_NAMES.items():
        if isinstance(value, kind):
            return name
    return "an integer" if isinstance(value, int) else type(value).__name__
