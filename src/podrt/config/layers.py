"""Loading: defaults <- main file <- drop-ins <- overrides, each key traced to its file."""

import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs
import tomli_w

from podrt.config.checks import ConfigError, Invalid, got
from podrt.config.schema import Config

DEFAULT_CONFIG_PATH = Path("/etc/podrt/podrt.toml")
DROPIN_DIRNAME = "podrt.d"


@attrs.frozen
class _Root:
    """The whole file: everything lives under [podrt], like crio.conf's [crio]."""
    podrt: Config = attrs.field(factory=Config)


_Path = tuple[str, ...]
_SCALARS = {
    str: ("a string", lambda v: isinstance(v, str)),
    int: ("an integer", lambda v: type(v) is int),
    float: ("a number", lambda v: type(v) in (int, float)),
    bool: ("a boolean", lambda v: type(v) is bool),
}


def _fail(origins: dict, path: _Path, msg: str, at: _Path | None = None) -> NoReturn:
    key = ".".join(path).replace(".[", "[")
    source = origins.get(at or tuple(p for p in path if not p.startswith("[")))
    text = f"{source}: {key}: {msg}" if source else f"{key}: {msg}"
    raise ConfigError(" ".join(text.splitlines()))


def _structure(tp: Any, value: Any, path: _Path, origins: dict) -> Any:
    """Check ``value`` against type ``tp`` and convert it (recursively)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if attrs.has(tp) or origin is dict:
        if not isinstance(value, dict):
            _fail(origins, path, f"expected a table, got {got(value)}")
        if origin is dict:
            return {k: _structure(args[1], v, path + (k,), origins) for k, v in value.items()}
        return _build(tp, value, path, origins)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(origins, path, f"expected an array, got {got(value)}")
        return tuple(_structure(args[0], v, path + (f"[{i}]",), origins)
                     for i, v in enumerate(value))
    want, ok = _SCALARS[tp]
    if not ok(value):
        _fail(origins, path, f"expected {want}, got {got(value)}")
    return float(value) if tp is float else value


def _build(cls: type, table: dict, path: _Path, origins: dict) -> Any:
    fields = attrs.fields_dict(cls)
    for key in table:
        if key not in fields:
            _fail(origins, path + (key,), "unknown key")
    kwargs = {}
    for name, field in fields.items():
        if name not in table:
            if field.default is attrs.NOTHING:
                _fail(origins, path + (name,), "required key is missing", at=path)
            continue
        value = _structure(field.type, table[name], path + (name,), origins)
        if field.validator is not None:
            try:
                field.validator(None, field, value)
            except Invalid as e:
                _fail(origins, path + (name, *e.sub), str(e))
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except Invalid as e:  # cross-field checks in __attrs_post_init__
        where = path + ((e.field, *e.sub) if e.field else ())
        _fail(origins, where, str(e), at=where[:-1] if e.sub else None)


def _defaults(cls: type) -> dict:
    """The attrs defaults of ``cls`` as a table, before any derivation (layer 0)."""
    table = {}
    for field in attrs.fields(cls):
        if attrs.has(field.type):
            table[field.name] = _defaults(field.type)
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            table[field.name] = _unstructure(field.default.factory())
        elif field.default is not attrs.NOTHING:
            table[field.name] = _unstructure(field.default)
    return table


def _unstructure(value: Any) -> Any:
    if attrs.has(type(value)):
        return {f.name: _unstructure(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, dict):
        return {k: _unstructure(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unstructure(v) for v in value]
    return value


def _merge(base: dict, layer: Mapping, source: str | None, origins: dict, path: _Path = ()) -> None:
    """Deep-merge ``layer`` into ``base``; remember which source set each key."""
    for key, value in layer.items():
        origins[path + (key,)] = source
        if isinstance(value, Mapping):
            if not isinstance(base.get(key), dict):
                base[key] = {}
            _merge(base[key], value, source, origins, path + (key,))
        else:
            base[key] = value


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {' '.join(str(e).splitlines())}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None


def load_config(path: Path | None = None, dropin_dir: Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load defaults <- main file <- sorted drop-ins <- overrides, then validate."""
    explicit = path is not None
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    dropin_dir = Path(dropin_dir) if dropin_dir is not None else path.parent / DROPIN_DIRNAME
    files = []
    if path.exists():
        files.append(path)
    elif explicit:
        raise ConfigError(f"{path}: config file does not exist")
    if dropin_dir.is_dir():
        files += sorted((p for p in dropin_dir.glob("*.toml") if p.is_file()), key=lambda p: p.name)
    raw: dict = _defaults(_Root)  # layer 0: the defaults ("" where derived from the runroot)
    origins: dict = {}  # key path -> file that set it last (None: default/override)
    for file in files:
        _merge(raw, _read_toml(file), str(file), origins)
    for dotted, value in (overrides or {}).items():
        for part in reversed(dotted.split(".")):
            value = {part: value}
        _merge(raw, value, None, origins)
    return _structure(_Root, raw, (), origins).podrt


def dump_config(cfg: Config) -> str:
    """The full effective configuration (every key) as TOML."""
    return tomli_w.dumps(_unstructure(_Root(cfg)))

