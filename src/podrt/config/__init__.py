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

from podrt.config.checks import ConfigError, UnknownRuntimeHandler
from podrt.config.layers import DEFAULT_CONFIG_PATH, DROPIN_DIRNAME, dump_config, load_config
from podrt.config.schema import (
    ApiConfig,
    Config,
    DebugConfig,
    ImageConfig,
    MetricsConfig,
    NetworkConfig,
    RuntimeConfig,
    RuntimeHandler,
    StatsConfig,
)

__all__ = [
    "DEFAULT_CONFIG_PATH", "DROPIN_DIRNAME", "ApiConfig", "Config", "ConfigError", "DebugConfig", "ImageConfig",
    "MetricsConfig", "NetworkConfig", "RuntimeConfig", "RuntimeHandler", "StatsConfig", "UnknownRuntimeHandler",
    "dump_config", "load_config",
]
