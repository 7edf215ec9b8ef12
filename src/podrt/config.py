"""podrt configuration, modeled on CRI-O's crio.conf.

Layers, applied in order and deep-merged table by table (a later layer that
sets one key of a table changes only that key):

1. the built-in defaults (the attrs defaults below),
2. the main file (default ``/etc/podrt/podrt.toml``, may be absent),
3. drop-ins ``<dir of main file>/podrt.d/*.toml``, sorted by file name,
4. ``overrides``: flat ``{"podrt.api.listen": value}`` mapping (CLI flags).

The attrs classes are the single schema: field types drive type checking,
field validators drive value checking (also on direct construction), field
defaults drive the defaults and ``dump_config`` walks the same fields.
Every error is a one-line ``ConfigError``: ``<file>: <dotted.key>: <what>``.

The daemon's volatile state paths default to places inside the runroot
(``api.listen``, ``network.netns_dir``, ``runtime.userns_dir``, each handler's ``runtime_root``): a
second daemon given another ``--runroot`` shares nothing with the first. They
are "" in the attrs defaults and derived by ``Config``; a path set anywhere
(file, drop-in, flag, constructor) is kept as given.
"""

import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs
import tomli_w

from podrt.oci.reference import is_reference

DEFAULT_CONFIG_PATH = Path("/etc/podrt/podrt.toml")
DROPIN_DIRNAME = "podrt.d"


class ConfigError(Exception):
    """Invalid configuration; the message is a single line naming file and key."""


class UnknownRuntimeHandler(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class _Invalid(ValueError):  # field/sub: where below the checked class
    def __init__(self, msg: str, field: str | None = None, sub: tuple = ()) -> None:
        super().__init__(msg)
        self.field, self.sub = field, sub


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)  # true/false, "quoted"
    return text if len(text) <= 80 else text[:77] + "..."


_TOML_TYPES = ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), ((list, tuple), "array"))


def _got(value: Any) -> str:
    """TOML type name and value, e.g. 'string "abc"'; datetimes keep their Python name."""
    if isinstance(value, dict):
        return "table"
    kind = next((n for t, n in _TOML_TYPES if isinstance(value, t)), type(value).__name__)
    return f"{kind} {_show(value)}"


# -------------------------------------------------------------- validators
# attrs-style validators (instance, attribute, value); they never look at the
# instance, so the loader can run them per field to report the exact key.
_Validator = Callable[[Any, Any, Any], None]


def _check(pred: Callable[[Any], Any], must: str) -> _Validator:
    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        if not pred(value):
            raise _Invalid(f"{must}, got {_show(value)}")
    return validate


def _one_of(*choices: str) -> _Validator:
    quoted = [json.dumps(c) for c in choices]
    alts = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
    return _check(lambda v: v in choices, f"must be {alts}")


def _in_range(lo: int, hi: int | None = None) -> _Validator:
    must = f"must be >= {lo}" if hi is None else f"must be between {lo} and {hi}"
    return _check(lambda v: lo <= v and (hi is None or v <= hi), must)


def _matches(regex: str, must: str) -> _Validator:
    return _check(lambda v: re.fullmatch(regex, v) is not None, must)


def _each(validator: _Validator) -> _Validator:
    def validate(inst: Any, attr: Any, value: Any) -> None:
        for i, item in enumerate(value):
            try:
                validator(inst, attr, item)
            except _Invalid as e:
                raise _Invalid(str(e), sub=(f"[{i}]",)) from None
    return validate


_absolute = _check(os.path.isabs, "must be an absolute path")
_nonempty = _check(bool, "must not be empty")
_positive = _check(lambda v: v > 0 and math.isfinite(v), "must be a finite number > 0")
_OCTAL_RE = r"(?:0o|0)?[0-7]{1,3}"
_SIZE_RE = r"([1-9][0-9]*)(k|Ki|M|Mi|G|Gi)?"
_SIZE_UNITS = {None: 1, "k": 10**3, "Ki": 2**10, "M": 10**6, "Mi": 2**20,
               "G": 10**9, "Gi": 2**30}


def _f(default: Any, *validators: _Validator) -> Any:
    """A config field: default plus validators (all run on every construction)."""
    validator = attrs.validators.and_(*validators) if validators else None
    if isinstance(default, dict):
        return attrs.field(factory=lambda: dict(default), validator=validator)
    return attrs.field(default=default, validator=validator)


_absolute_or_derived = _check(lambda v: v == "" or os.path.isabs(v), "must be an absolute path")  # "": derived


@attrs.frozen
class ApiConfig:
    listen: str = _f("", _absolute_or_derived)  # "": <runroot>/podrt.sock
    socket_mode: str = _f("0660", _matches(
        _OCTAL_RE, 'must be an octal mode string like "0660" (at most 0777)'))
    stream_address: str = _f("127.0.0.1", _nonempty)
    stream_port: int = _f(0, _in_range(0, 65535))  # 0: a free port, chosen at each start
    # a session with nothing sent either way for this long is closed; 0 never
    # (the kubelet's streaming-connection-idle-timeout default is 4 h)
    stream_idle_timeout: float = _f(4 * 3600.0, _in_range(0))
    stream_max_sessions: int = _f(256, _in_range(1))  # more are refused with 503 until some end
    stream_enable_tls: bool = _f(False)
    stream_tls_cert: str = _f("")  # PEM; required with stream_enable_tls
    stream_tls_key: str = _f("")
    stream_tls_ca: str = _f("")  # when set, clients must present a certificate it signed
    max_msg_size: int = _f(16 * 1024 * 1024, _in_range(1))
    # SIGTERM: calls already running get this long to finish and answer
    # (grpc-go's GracefulStop); whatever still runs then is cut and unwound.
    shutdown_grace: float = _f(30.0, _positive)

    @property
    def socket_mode_int(self) -> int:
        return int(self.socket_mode.removeprefix("0o"), 8)


@attrs.frozen
class RuntimeHandler:
    runtime_path: str = attrs.field(validator=_absolute)   # required for new handlers
    # runc --root; "": <runroot>/<handler name>, so daemons with their own
    # runroots never see (and never sweep) each other's containers
    runtime_root: str = _f("", _absolute_or_derived)
    runtime_type: str = _f("oci", _check(lambda v: v == "oci", 'must be "oci"'))


_RUNC = RuntimeHandler(runtime_path="/usr/sbin/runc")


@attrs.frozen
class RuntimeConfig:
    default_runtime: str = _f("runc", _nonempty)
    cgroup_manager: str = _f("cgroupfs", _one_of("cgroupfs", "systemd"))
    conmon: str = _f("/usr/bin/conmon", _absolute)
    conmon_cgroup: str = _f("pod", _check(
        lambda v: v == "pod" or (v.endswith(".slice") and len(v) > len(".slice")),
        'must be "pod" or a systemd slice name ending in ".slice"'))
    infra_oom_score_adj: int = _f(-998, _in_range(-1000, 1000))
    infra_cpu_shares: int = _f(2, _in_range(2))
    shm_size: str = _f("64Mi", _matches(
        _SIZE_RE, 'must be a size like "64Mi" (bytes, or a k/Ki/M/Mi/G/Gi suffix)'))
    allow_privileged: bool = _f(True)
    seccomp_enabled: bool = _f(True)
    seccomp_profile: str = _f("", _check(lambda v: v == "" or os.path.isabs(v),
                                         'must be "" or an absolute path'))
    default_sysctls: tuple[str, ...] = _f((), _each(_matches(
        r"[A-Za-z0-9_][A-Za-z0-9_./-]*=.+", 'must be "key=value"')))
    # Pod sysctls: the kubelet's --allowed-unsafe-sysctls is the policy, and podrt
    # applies every namespaced sysctl it sends (as CRI-O and containerd do). Set
    # restrict_unsafe_sysctls to also refuse those outside the kubelet's safe set
    # that allowed_unsafe_sysctls (names, or prefixes ending in "*") does not name.
    restrict_unsafe_sysctls: bool = _f(False)
    allowed_unsafe_sysctls: tuple[str, ...] = _f((), _each(_matches(
        r"[a-z0-9_][a-z0-9_./-]*\*?", 'must be a sysctl name, or a prefix ending in "*"')))
    sandbox_claim_timeout: float = _f(240.0, _positive)
    create_wait_timeout: float = _f(240.0, _positive)
    # ExecSync keeps at most this many bytes of each of stdout and stderr; both
    # together stay under the kubelet's 16 MiB message limit
    exec_sync_max_output: int = _f(4 * 1024 * 1024, _in_range(1024, 1 << 30))
    runtimes: dict[str, RuntimeHandler] = _f({"runc": _RUNC})
    # CDI spec dirs (.json, .yaml): a device in a later dir replaces one of the same name in an earlier
    cdi_spec_dirs: tuple[str, ...] = _f(("/etc/cdi", "/var/run/cdi"), _each(_absolute))
    # pods' user namespaces: their pins ("": <runroot>/userns); "refuse": FailedPrecondition where ID-mapped mounts fail
    userns_dir: str = _f("", _absolute_or_derived)
    userns_without_idmap: str = _f("refuse", _one_of("refuse"))

    def __attrs_post_init__(self) -> None:
        if self.default_runtime not in self.runtimes:
            raise _Invalid(f"must name a handler in podrt.runtime.runtimes "
                           f"({', '.join(sorted(self.runtimes)) or 'none'}), "
                           f"got {_show(self.default_runtime)}", field="default_runtime")
        if self.cgroup_manager == "cgroupfs" and self.conmon_cgroup != "pod":
            raise _Invalid(f'must be "pod" when podrt.runtime.cgroup_manager is "cgroupfs", '
                           f"got {_show(self.conmon_cgroup)}", field="conmon_cgroup")

    @property
    def shm_size_bytes(self) -> int:
        number, unit = re.fullmatch(_SIZE_RE, self.shm_size).groups()  # type: ignore[union-attr]  # validated
        return int(number) * _SIZE_UNITS[unit]


@attrs.frozen
class ImageConfig:
    # the builtin (catatonit, built at start) or an image reference, pulled when first needed
    pause_image: str = _f("podrt.local/pause:builtin", _nonempty, _check(is_reference, "must be an image reference"))
    # the builtin's command; a pulled pause image runs its own entrypoint and cmd (this when it has none)
    pause_command: tuple[str, ...] = _f(("/catatonit", "-P"), _nonempty)
    catatonit_path: str = _f("/usr/bin/catatonit", _absolute)
    # containers-registries.conf(5) v2, as CRI-O, Podman and skopeo read it (drop-ins: <file>.d/)
    registries_conf: str = _f("/etc/containers/registries.conf", _absolute)
    certs_dirs: tuple[str, ...] = _f(("/etc/containers/certs.d", "/etc/docker/certs.d"), _each(_absolute))
    global_auth_file: str = _f("", _check(lambda v: v == "" or os.path.isabs(v), 'must be "" or an absolute path'))
    max_concurrent_downloads: int = _f(3, _in_range(1, 64))
    # a pull that receives no byte for this long fails (CRI-O's pull_progress_timeout)
    pull_progress_timeout: float = _f(300.0, _positive)


@attrs.frozen
class NetworkConfig:
    network_dir: str = _f("/etc/cni/net.d", _absolute)
    plugin_dirs: tuple[str, ...] = _f(("/usr/lib/cni", "/opt/cni/bin"),
                                      _nonempty, _each(_absolute))
    netns_dir: str = _f("", _absolute_or_derived)  # "": <runroot>/netns
    plugin_timeout: float = _f(60.0, _positive)  # per plugin call; then its process group is killed


@attrs.frozen
class MetricsConfig:
    enable_metrics: bool = _f(False)
    metrics_host: str = _f("127.0.0.1", _nonempty)
    metrics_port: int = _f(9090, _in_range(1, 65535))


@attrs.frozen
class DebugConfig:
    fault_points: tuple[str, ...] = _f((), _each(_matches(
        r"[A-Za-z0-9_.-]+:(?:before|after)", 'must be "stepname:before" or "stepname:after"')))
    # how long a streaming URL stays valid; the kubelet's is a minute (tests shorten it)
    stream_token_ttl: float = _f(60.0, _positive)


@attrs.frozen
class Config:
    root: str = _f("/var/lib/podrt", _absolute)
    runroot: str = _f("/run/podrt", _absolute)
    log_dir: str = _f("/var/log/pods", _absolute)
    log_level: str = _f("info", _one_of("debug", "info", "warning", "error"))
    api: ApiConfig = attrs.field(factory=ApiConfig)
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    image: ImageConfig = attrs.field(factory=ImageConfig)
    network: NetworkConfig = attrs.field(factory=NetworkConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    debug: DebugConfig = attrs.field(factory=DebugConfig)

    def __attrs_post_init__(self) -> None:
        """Fill the runroot-derived paths left "" (frozen: set once, here)."""
        run = self.runroot
        if not self.api.listen:
            object.__setattr__(self, "api", attrs.evolve(self.api, listen=os.path.join(run, "podrt.sock")))
        if not self.network.netns_dir:
            object.__setattr__(self, "network", attrs.evolve(self.network, netns_dir=os.path.join(run, "netns")))
        if not self.runtime.userns_dir:
            object.__setattr__(self, "runtime", attrs.evolve(self.runtime, userns_dir=os.path.join(run, "userns")))
        if any(not h.runtime_root for h in self.runtime.runtimes.values()):
            runtimes = {name: h if h.runtime_root else attrs.evolve(h, runtime_root=_handler_root(run, name))
                        for name, h in self.runtime.runtimes.items()}
            object.__setattr__(self, "runtime", attrs.evolve(self.runtime, runtimes=runtimes))

    def runtime_handler(self, name: str) -> RuntimeHandler:
        try:
            return self.runtime.runtimes[name]
        except KeyError:
            known = ", ".join(sorted(self.runtime.runtimes))
            raise UnknownRuntimeHandler(
                f"unknown runtime handler {name!r} (known: {known})") from None


# What podrt itself keeps in the runroot: a handler of one of these names needs
# an explicit runtime_root (sandbox/container run dirs, conmon's exit files, namespace pins, ID-mapped mounts).
_RUNROOT_ENTRIES = frozenset({"sandboxes", "containers", "exits", "netns", "userns", "idmap"})
_HANDLER_DIR_RE = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"  # a RuntimeClass handler: a DNS label


def _handler_root(runroot: str, name: str) -> str:
    """<runroot>/<name>: /run/podrt/runc for the default, as before runroots were honoured."""
    if re.fullmatch(_HANDLER_DIR_RE, name) is None or name in _RUNROOT_ENTRIES:
        raise _Invalid(f"must be set: the handler's name {_show(name)} cannot be its directory in the runroot "
                       f"(a name must be a DNS label other than {', '.join(sorted(_RUNROOT_ENTRIES))})",
                       field="runtime", sub=("runtimes", name, "runtime_root"))
    return os.path.join(runroot, name)


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
            _fail(origins, path, f"expected a table, got {_got(value)}")
        if origin is dict:
            return {k: _structure(args[1], v, path + (k,), origins) for k, v in value.items()}
        return _build(tp, value, path, origins)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(origins, path, f"expected an array, got {_got(value)}")
        return tuple(_structure(args[0], v, path + (f"[{i}]",), origins)
                     for i, v in enumerate(value))
    want, ok = _SCALARS[tp]
    if not ok(value):
        _fail(origins, path, f"expected {want}, got {_got(value)}")
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
            except _Invalid as e:
                _fail(origins, path + (name, *e.sub), str(e))
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except _Invalid as e:  # cross-field checks in __attrs_post_init__
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

