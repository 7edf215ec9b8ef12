"""Unit tests for podrt.config (no root needed)."""

import tempfile
import textwrap
import tomllib
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podrt.config import (
    ApiConfig,
    Config,
    ConfigError,
    RuntimeConfig,
    RuntimeHandler,
    UnknownRuntimeHandler,
    dump_config,
    load_config,
)
from podrt.config import layers as config_layers

EXPECTED_DEFAULTS = {
    "podrt": {
        "root": "/var/lib/podrt",
        "runroot": "/run/podrt",
        "log_dir": "/var/log/pods",
        "log_level": "info",
        "loop_nice": -20,
        "api": {
            "listen": "/run/podrt/podrt.sock",
            "socket_mode": "0660",
            "stream_address": "127.0.0.1",
            "stream_port": 0,
            "stream_idle_timeout": 14400.0,
            "stream_max_sessions": 256,
            "stream_enable_tls": False,
            "stream_tls_cert": "",
            "stream_tls_key": "",
            "stream_tls_ca": "",
            "max_msg_size": 16777216,
            "list_chunk_size": 4194304,
            "shutdown_grace": 30.0,
        },
        "runtime": {
            "default_runtime": "runc",
            "cgroup_manager": "cgroupfs",
            "conmon": "/usr/bin/conmon",
            "conmon_cgroup": "pod",
            "drop_infra_ctr": True,
            "infra_oom_score_adj": -998,
            "infra_cpu_shares": 2,
            "shm_size": "64Mi",
            "allow_privileged": True,
            "seccomp_enabled": True,
            "seccomp_profile": "",
            "default_sysctls": [],
            "restrict_unsafe_sysctls": False,
            "allowed_unsafe_sysctls": [],
            "sandbox_claim_timeout": 240.0,
            "create_wait_timeout": 240.0,
            "exec_sync_max_output": 4194304,
            "runtimes": {
                "runc": {
                    "runtime_path": "/usr/sbin/runc",
                    "runtime_root": "/run/podrt/runc",
                    "runtime_type": "oci",
                },
            },
            "cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi"],
            "userns_dir": "/run/podrt/userns",
            "userns_without_idmap": "refuse",
        },
        "image": {
            "pause_image": "podrt.local/pause:builtin",
            "pause_command": ["/catatonit", "-P"],
            "catatonit_path": "/usr/bin/catatonit",
            "registries_conf": "/etc/containers/registries.conf",
            "certs_dirs": ["/etc/containers/certs.d", "/etc/docker/certs.d"],
            "global_auth_file": "",
            "max_concurrent_downloads": 3,
            "pull_progress_timeout": 300.0,
        },
        "network": {
            "network_dir": "/etc/cni/net.d",
            "plugin_dirs": ["/usr/lib/cni", "/opt/cni/bin"],
            "netns_dir": "/run/podrt/netns",
            "plugin_timeout": 60.0,
        },
        "metrics": {
            "enable_metrics": False,
            "metrics_host": "127.0.0.1",
            "metrics_port": 9090,
        },
        "stats": {"included_pod_metrics": [], "collection_period": 1.0},
        "debug": {"fault_points": [], "stream_token_ttl": 60.0, "detect_blocking": False},
    }
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def main(tmp_path) -> Path:
    return tmp_path / "podrt.toml"


@pytest.fixture
def no_default_file(tmp_path, monkeypatch) -> Path:
    """Point the default config path into tmp_path (file absent)."""
    default = tmp_path / "etc" / "podrt.toml"
    monkeypatch.setattr(config_layers, "DEFAULT_CONFIG_PATH", default)
    return default


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, **kwargs)
    msg = str(excinfo.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


# ------------------------------------------------------------------ defaults

def test_defaults_without_any_file(no_default_file):
    cfg = load_config()
    assert cfg == Config()
    assert tomllib.loads(dump_config(cfg)) == EXPECTED_DEFAULTS


def test_default_python_types():
    cfg = Config()
    assert cfg.network.plugin_dirs == ("/usr/lib/cni", "/opt/cni/bin")
    assert cfg.image.pause_command == ("/catatonit", "-P")
    assert cfg.runtime.default_sysctls == () and cfg.debug.fault_points == ()
    assert isinstance(cfg.runtime.sandbox_claim_timeout, float)
    assert isinstance(cfg.runtime.create_wait_timeout, float)
    assert list(cfg.runtime.runtimes) == ["runc"]
    assert cfg.api.socket_mode_int == 0o660
    assert cfg.runtime.shm_size_bytes == 64 * 1024 * 1024


def test_default_path_file_and_dropins_are_used(no_default_file):
    write(no_default_file.parent / "podrt.d" / "10-a.toml", '[podrt]\nlog_level = "debug"\n')
    assert load_config().log_level == "debug"
    write(no_default_file, '[podrt]\nroot = "/srv/podrt"\nlog_level = "error"\n')
    cfg = load_config()
    assert (cfg.root, cfg.log_level) == ("/srv/podrt", "debug")  # drop-in beats main file


def test_config_is_frozen():
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Config().root = "/x"  # type: ignore[misc]


def test_direct_construction_is_validated():
    with pytest.raises(ValueError, match="absolute"):
        ApiConfig(listen="relative.sock")
    with pytest.raises(ValueError, match="default_runtime|runtimes"):
        RuntimeConfig(default_runtime="kata")


@pytest.mark.parametrize("mode,expected", [("0660", 0o660), ("755", 0o755),
                                           ("0o700", 0o700), ("0", 0)])
def test_socket_mode_int(mode, expected):
    assert ApiConfig(socket_mode=mode).socket_mode_int == expected


@pytest.mark.parametrize("size,expected", [
    ("4096", 4096), ("1k", 1000), ("1Ki", 1024), ("3M", 3_000_000),
    ("64Mi", 64 << 20), ("2G", 2 * 10**9), ("1Gi", 1 << 30),
])
def test_shm_size_bytes(size, expected):
    assert RuntimeConfig(shm_size=size).shm_size_bytes == expected


def test_runtime_handler_lookup():
    cfg = Config()
    assert cfg.runtime_handler("runc").runtime_root == "/run/podrt/runc"
    with pytest.raises(KeyError) as excinfo:
        cfg.runtime_handler("kata")
    assert isinstance(excinfo.value, UnknownRuntimeHandler)
    assert "kata" in str(excinfo.value) and "runc" in str(excinfo.value)


def test_state_paths_derive_from_the_runroot(main, tmp_path):
    """Two daemons with their own runroots share no runc root, netns dir or socket."""
    write(main, """
        [podrt]
        runroot = "/run/b"
        [podrt.runtime.runtimes.crun]
        runtime_path = "/usr/bin/crun"
        [podrt.runtime.runtimes.kata]
        runtime_path = "/usr/bin/kata"
        runtime_root = "/run/kata"
    """)
    cfg = load_config(main)
    assert cfg.runtime_handler("runc").runtime_root == "/run/b/runc"
    assert cfg.runtime_handler("crun").runtime_root == "/run/b/crun"
    assert cfg.runtime_handler("kata").runtime_root == "/run/kata"  # set: kept
    assert cfg.network.netns_dir == "/run/b/netns" and cfg.runtime.userns_dir == "/run/b/userns"
    assert cfg.api.listen == "/run/b/podrt.sock"
    # the CLI's --runroot is the last layer: what it derives follows it
    cfg = load_config(main, overrides={"podrt.runroot": "/run/c", "podrt.network.netns_dir": "/srv/ns"})
    assert (cfg.runtime_handler("runc").runtime_root, cfg.api.listen) == ("/run/c/runc", "/run/c/podrt.sock")
    assert cfg.network.netns_dir == "/srv/ns"
    # a derived path is kept as it was derived by the dump, so the dump loads to the same config
    assert load_config(write(tmp_path / "dump" / "d.toml", dump_config(cfg))) == cfg
    # direct construction derives too; an explicit path (the test daemons' configs) is kept
    assert Config(runroot="/r").runtime_handler("runc").runtime_root == "/r/runc"
    explicit = Config(runroot="/r", runtime=RuntimeConfig(runtimes={"runc": RuntimeHandler("/usr/sbin/runc", "/x/runc")}))
    assert explicit.runtime_handler("runc").runtime_root == "/x/runc"


# --------------------------------------------------------------- file layers

def test_file_overrides_defaults(main):
    write(main, """
        [podrt]
        root = "/srv/podrt"
        [podrt.api]
        stream_port = 10010
        [podrt.runtime]
        cgroup_manager = "systemd"
        conmon_cgroup = "system.slice"
        sandbox_claim_timeout = 30
        default_sysctls = ["net.ipv4.ping_group_range=0 2147483647"]
        [podrt.network]
        plugin_dirs = ["/opt/cni/bin"]
        [podrt.debug]
        fault_points = ["create_container:before", "netns.setup:after"]
    """)
    cfg = load_config(main)
    assert cfg.root == "/srv/podrt"
    assert cfg.runroot == "/run/podrt"  # untouched default
    assert cfg.api.stream_port == 10010
    assert cfg.api.listen == "/run/podrt/podrt.sock"
    assert (cfg.runtime.cgroup_manager, cfg.runtime.conmon_cgroup) == ("systemd", "system.slice")
    assert cfg.runtime.sandbox_claim_timeout == 30.0
    assert isinstance(cfg.runtime.sandbox_claim_timeout, float)
    assert cfg.runtime.default_sysctls == ("net.ipv4.ping_group_range=0 2147483647",)
    assert cfg.network.plugin_dirs == ("/opt/cni/bin",)
    assert cfg.debug.fault_points == ("create_container:before", "netns.setup:after")


def test_empty_file_gives_defaults(main):
    write(main, "")
    assert load_config(main) == Config()


def test_dropins_sorted_and_deep_merged(main, tmp_path):
    write(main, """
        [podrt.api]
        listen = "/run/main.sock"
        stream_port = 1
        [podrt.metrics]
        metrics_port = 1111
    """)
    dropins = tmp_path / "podrt.d"
    # written out of order on purpose; sorting is by name
    write(dropins / "20-b.toml", "[podrt.api]\nstream_port = 20\n")
    write(dropins / "10-a.toml", "[podrt.api]\nstream_port = 10\nsocket_mode = \"0600\"\n")
    write(dropins / "30-c.toml", "[podrt.metrics]\nenable_metrics = true\n")
    write(dropins / "99-ignored.conf", "[podrt.api]\nstream_port = 99\n")
    (dropins / "50-dir.toml").mkdir()
    cfg = load_config(main)
    assert cfg.api.stream_port == 20                 # later drop-in wins
    assert cfg.api.socket_mode == "0600"              # earlier drop-in key kept
    assert cfg.api.listen == "/run/main.sock"         # main file key kept
    assert cfg.metrics.metrics_port == 1111           # same table, other key kept
    assert cfg.metrics.enable_metrics is True


def test_explicit_dropin_dir(main, tmp_path):
    write(main, "[podrt]\nlog_level = \"warning\"\n")
    write(tmp_path / "podrt.d" / "a.toml", "[podrt]\nlog_level = \"error\"\n")
    other = tmp_path / "other"
    write(other / "a.toml", "[podrt]\nlog_level = \"debug\"\n")
    assert load_config(main).log_level == "error"
    assert load_config(main, dropin_dir=other).log_level == "debug"
    assert load_config(main, dropin_dir=tmp_path / "missing").log_level == "warning"


def test_dropin_adds_runtime_handler_and_keeps_runc(main, tmp_path):
    write(main, "")
    write(tmp_path / "podrt.d" / "crun.toml", """
        [podrt.runtime]
        default_runtime = "crun"
        [podrt.runtime.runtimes.crun]
        runtime_path = "/usr/bin/crun"
        runtime_root = "/run/podrt/crun"
    """)
    cfg = load_config(main)
    assert set(cfg.runtime.runtimes) == {"runc", "crun"}
    assert cfg.runtime_handler("crun") == RuntimeHandler("/usr/bin/crun", "/run/podrt/crun")
    assert cfg.runtime_handler(cfg.runtime.default_runtime).runtime_path == "/usr/bin/crun"


def test_dropin_changes_one_key_of_runc(main, tmp_path):
    write(main, "")
    write(tmp_path / "podrt.d" / "a.toml",
          "[podrt.runtime.runtimes.runc]\nruntime_path = \"/usr/local/bin/runc\"\n")
    runc = load_config(main).runtime_handler("runc")
    assert runc == RuntimeHandler("/usr/local/bin/runc", "/run/podrt/runc")


def test_layers_merge_before_validation(main, tmp_path):
    # an invalid combination in the main file that a drop-in repairs is fine
    write(main, '[podrt.runtime]\nconmon_cgroup = "system.slice"\n')
    write(tmp_path / "podrt.d" / "a.toml", '[podrt.runtime]\ncgroup_manager = "systemd"\n')
    assert load_config(main).runtime.conmon_cgroup == "system.slice"


def test_overrides_win_over_files(main, tmp_path):
    write(main, '[podrt]\nroot = "/main"\n[podrt.api]\nlisten = "/run/main.sock"\n')
    write(tmp_path / "podrt.d" / "a.toml", '[podrt]\nroot = "/dropin"\n')
    cfg = load_config(main, overrides={
        "podrt.root": "/cli",
        "podrt.network.plugin_dirs": ["/cli/cni"],
        "podrt.runtime.runtimes.kata.runtime_path": "/usr/bin/kata",
        "podrt.runtime.runtimes.kata.runtime_root": "/run/kata",
    })
    assert cfg.root == "/cli"
    assert cfg.api.listen == "/run/main.sock"
    assert cfg.network.plugin_dirs == ("/cli/cni",)
    assert cfg.runtime_handler("kata").runtime_path == "/usr/bin/kata"


def test_overrides_without_file(no_default_file):
    cfg = load_config(overrides={"podrt.api.stream_port": 1234, "podrt.metrics.enable_metrics": True})
    assert cfg.api.stream_port == 1234 and cfg.metrics.enable_metrics is True


# ---------------------------------------------------------------- round trip

def test_round_trip_defaults(tmp_path):
    p = write(tmp_path / "dump.toml", dump_config(Config()))
    assert load_config(p) == Config()


def test_round_trip_customized(main, tmp_path):
    write(main, """
        [podrt]
        log_level = "debug"
        [podrt.runtime]
        cgroup_manager = "systemd"
        conmon_cgroup = "podrt-conmon.slice"
        default_sysctls = ["net.core.somaxconn=1024"]
        create_wait_timeout = 2.5
        [podrt.runtime.runtimes.crun]
        runtime_path = "/usr/bin/crun"
        runtime_root = "/run/podrt/crun"
        [podrt.debug]
        fault_points = ["pull:after"]
    """)
    cfg = load_config(main)
    text = dump_config(cfg)
    assert "[podrt.runtime.runtimes.crun]" in text
    assert load_config(write(tmp_path / "dump" / "d.toml", text)) == cfg


_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_abs_paths = st.text(st.characters(codec="utf-8"), max_size=20).map(lambda s: "/" + s)


@st.composite
def configs(draw) -> Config:
    extra = draw(st.dictionaries(_names, st.builds(RuntimeHandler, _abs_paths, _abs_paths),
                                 max_size=3))
    runtimes = {"runc": Config().runtime_handler("runc"), **extra}
    base = Config()
    return attrs.evolve(
        base,
        root=draw(_abs_paths),
        log_level=draw(st.sampled_from(["debug", "info", "warning", "error"])),
        api=attrs.evolve(
            base.api,
            listen=draw(_abs_paths),
            socket_mode=f"0{draw(st.integers(0, 0o777)):o}",
            stream_port=draw(st.integers(0, 65535)),
        ),
        runtime=attrs.evolve(
            base.runtime,
            runtimes=runtimes,
            default_runtime=draw(st.sampled_from(sorted(runtimes))),
            infra_oom_score_adj=draw(st.integers(-1000, 1000)),
            shm_size=f"{draw(st.integers(1, 10**12))}{draw(st.sampled_from(['', 'k', 'Ki', 'M', 'Mi', 'G', 'Gi']))}",
            sandbox_claim_timeout=draw(st.floats(min_value=1e-9, max_value=1e12)),
            default_sysctls=tuple(draw(st.lists(
                st.from_regex(r"[a-z][a-z0-9_.]{0,15}=[^\n]{1,15}", fullmatch=True),
                max_size=3))),
        ),
        image=attrs.evolve(base.image, pause_command=tuple(
            draw(st.lists(st.text(st.characters(codec="utf-8")), min_size=1, max_size=4)))),
        network=attrs.evolve(base.network, plugin_dirs=tuple(
            draw(st.lists(_abs_paths, min_size=1, max_size=3)))),
        metrics=attrs.evolve(base.metrics, enable_metrics=draw(st.booleans()),
                             metrics_port=draw(st.integers(1, 65535))),
    )


@settings(max_examples=60, deadline=None)
@given(configs())
def test_round_trip_property(cfg):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "podrt.toml"
        path.write_text(dump_config(cfg), encoding="utf-8")
        assert load_config(path) == cfg


# -------------------------------------------------------------------- errors

BAD = [
    # (toml text, dotted key in the message, fragment of the message)
    ("bogus = 1\n", "bogus", "unknown key"),
    ("[podrt]\nbogus = 1\n", "podrt.bogus", "unknown key"),
    ("[podrt.network]\nbogus = 1\n", "podrt.network.bogus", "unknown key"),
    ("[podrt.nope]\nx = 1\n", "podrt.nope", "unknown key"),
    ("[podrt.runtime.runtimes.runc]\nbogus = 1\n", "podrt.runtime.runtimes.runc.bogus",
     "unknown key"),
    # type confusion
    ('[podrt.metrics]\nmetrics_port = "abc"\n', "podrt.metrics.metrics_port",
     'expected an integer, got string "abc"'),
    ("[podrt.api]\nstream_port = true\n", "podrt.api.stream_port",
     "expected an integer, got boolean true"),
    ("[podrt.api]\nstream_port = 1.5\n", "podrt.api.stream_port", "expected an integer"),
    ("[podrt.runtime]\nallow_privileged = 1\n", "podrt.runtime.allow_privileged",
     "expected a boolean, got integer 1"),
    ('[podrt.runtime]\nseccomp_enabled = "yes"\n', "podrt.runtime.seccomp_enabled",
     "expected a boolean"),
    ("[podrt.runtime]\nsandbox_claim_timeout = false\n", "podrt.runtime.sandbox_claim_timeout",
     "expected a number"),
    ('[podrt.network]\nplugin_dirs = "/opt/cni/bin"\n', "podrt.network.plugin_dirs",
     "expected an array"),
    ('[podrt]\nroot = ["/x"]\n', "podrt.root", "expected a string, got array"),
    ('[podrt.image]\npause_command = ["/catatonit", 1]\n', "podrt.image.pause_command[1]",
     "expected a string, got integer 1"),
    ("[podrt]\napi = 5\n", "podrt.api", "expected a table, got integer 5"),
    ("podrt = 1\n", "podrt", "expected a table"),
    ('[podrt.runtime]\nruntimes = "runc"\n', "podrt.runtime.runtimes", "expected a table"),
    ('[podrt]\nroot = 1979-05-27\n', "podrt.root", "expected a string, got date"),
    # paths
    ('[podrt.api]\nlisten = "run/x.sock"\n', "podrt.api.listen",
     'must be an absolute path, got "run/x.sock"'),
    ('[podrt]\nroot = ""\n', "podrt.root", "absolute path"),
    ('[podrt.network]\nplugin_dirs = ["/ok", "opt/cni"]\n', "podrt.network.plugin_dirs[1]",
     "absolute path"),
    ("[podrt.network]\nplugin_dirs = []\n", "podrt.network.plugin_dirs", "must not be empty"),
    ('[podrt.runtime]\nseccomp_profile = "profile.json"\n', "podrt.runtime.seccomp_profile",
     "absolute path"),
    ('[podrt.runtime.runtimes.runc]\nruntime_root = "runc"\n',
     "podrt.runtime.runtimes.runc.runtime_root", "absolute path"),
    # enums
    ('[podrt.runtime]\ncgroup_manager = "foo"\n', "podrt.runtime.cgroup_manager",
     'must be "cgroupfs" or "systemd", got "foo"'),
    ('[podrt]\nlog_level = "trace"\n', "podrt.log_level", '"debug", "info", "warning", "error"'),
    ('[podrt.runtime.runtimes.runc]\nruntime_type = "vm"\n',
     "podrt.runtime.runtimes.runc.runtime_type", 'must be "oci"'),
    # octal modes
    ('[podrt.api]\nsocket_mode = "0999"\n', "podrt.api.socket_mode", "octal"),
    ('[podrt.api]\nsocket_mode = "01777"\n', "podrt.api.socket_mode", "octal"),
    ('[podrt.api]\nsocket_mode = "rw-rw----"\n', "podrt.api.socket_mode", "octal"),
    ("[podrt.api]\nsocket_mode = 660\n", "podrt.api.socket_mode", "expected a string"),
    # sizes
    ('[podrt.runtime]\nshm_size = "64MB"\n', "podrt.runtime.shm_size", "size"),
    ('[podrt.runtime]\nshm_size = "1.5Gi"\n', "podrt.runtime.shm_size", "size"),
    ('[podrt.runtime]\nshm_size = "-1"\n', "podrt.runtime.shm_size", "size"),
    ('[podrt.runtime]\nshm_size = "0"\n', "podrt.runtime.shm_size", "size"),
    # ranges
    ("[podrt.api]\nstream_port = 70000\n", "podrt.api.stream_port", "between 0 and 65535"),
    ("[podrt.metrics]\nmetrics_port = 0\n", "podrt.metrics.metrics_port", "between 1 and 65535"),
    ("[podrt.api]\nmax_msg_size = 0\n", "podrt.api.max_msg_size", ">= 1"),
    ("[podrt.api]\nlist_chunk_size = 0\n", "podrt.api.list_chunk_size", ">= 1"),
    ("[podrt.runtime]\ninfra_oom_score_adj = -1001\n", "podrt.runtime.infra_oom_score_adj",
     "between -1000 and 1000"),
    ("[podrt.runtime]\ninfra_cpu_shares = 1\n", "podrt.runtime.infra_cpu_shares", ">= 2"),
    ("[podrt.runtime]\nsandbox_claim_timeout = 0\n", "podrt.runtime.sandbox_claim_timeout", "> 0"),
    ("[podrt.runtime]\ncreate_wait_timeout = -1.5\n", "podrt.runtime.create_wait_timeout", "> 0"),
    ("[podrt.runtime]\ncreate_wait_timeout = inf\n", "podrt.runtime.create_wait_timeout", "finite"),
    # non-empty strings / lists
    ('[podrt.image]\npause_image = ""\n', "podrt.image.pause_image", "must not be empty"),
    ("[podrt.image]\npause_command = []\n", "podrt.image.pause_command", "must not be empty"),
    # formats
    ('[podrt.runtime]\ndefault_sysctls = ["net.core.somaxconn"]\n',
     "podrt.runtime.default_sysctls[0]", "key=value"),
    ('[podrt.runtime]\ndefault_sysctls = ["ok=1", "=1"]\n',
     "podrt.runtime.default_sysctls[1]", "key=value"),
    ('[podrt.debug]\nfault_points = ["create_container:during"]\n',
     "podrt.debug.fault_points[0]", '"stepname:before" or "stepname:after"'),
    ('[podrt.debug]\nfault_points = ["a:before", "nocolon"]\n',
     "podrt.debug.fault_points[1]", "stepname:before"),
    ('[podrt.debug]\nfault_points = [":after"]\n', "podrt.debug.fault_points[0]", "stepname"),
    # cross-field
    ('[podrt.runtime]\ndefault_runtime = "kata"\n', "podrt.runtime.default_runtime",
     "podrt.runtime.runtimes (runc)"),
    ('[podrt.runtime]\nconmon_cgroup = "foo"\n', "podrt.runtime.conmon_cgroup", ".slice"),
    ('[podrt.runtime]\ncgroup_manager = "systemd"\nconmon_cgroup = ".slice"\n',
     "podrt.runtime.conmon_cgroup", ".slice"),
    ("[podrt.runtime.runtimes.crun]\nruntime_root = \"/run/crun\"\n",
     "podrt.runtime.runtimes.crun.runtime_path", "missing"),
    # a handler whose runtime_root would be derived from a name that is no plain dir name
    ("[podrt.runtime.runtimes.\"../x\"]\nruntime_path = \"/usr/bin/crun\"\n",
     "podrt.runtime.runtimes.../x.runtime_root", "must be set"),
    ("[podrt.runtime.runtimes.netns]\nruntime_path = \"/usr/bin/crun\"\n",
     "podrt.runtime.runtimes.netns.runtime_root", "must be set"),
]


@pytest.mark.parametrize("text,key,fragment", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_invalid_values(main, text, key, fragment):
    write(main, text)
    msg = load_error(main)
    assert msg.startswith(f"{main}: {key}: "), msg
    assert fragment in msg, msg


def test_conmon_cgroup_with_cgroupfs_mentions_both_keys(main):
    write(main, '[podrt.runtime]\ncgroup_manager = "cgroupfs"\nconmon_cgroup = "system.slice"\n')
    msg = load_error(main)
    assert msg.startswith(f"{main}: podrt.runtime.conmon_cgroup: "), msg
    assert "podrt.runtime.cgroup_manager" in msg and '"system.slice"' in msg
    # the same slice is fine with systemd
    write(main, '[podrt.runtime]\ncgroup_manager = "systemd"\nconmon_cgroup = "system.slice"\n')
    assert load_config(main).runtime.conmon_cgroup == "system.slice"


def test_exact_messages(main):
    write(main, '[podrt.runtime]\ncgroup_manager = "foo"\n')
    assert load_error(main) == (
        f'{main}: podrt.runtime.cgroup_manager: must be "cgroupfs" or "systemd", got "foo"')
    write(main, '[podrt.network]\nbogus = 1\n')
    assert load_error(main) == f"{main}: podrt.network.bogus: unknown key"


def test_error_names_the_dropin_that_set_the_key(main, tmp_path):
    write(main, '[podrt]\nroot = "/ok"\n')
    dropin = write(tmp_path / "podrt.d" / "50-bad.toml", '[podrt.api]\nlisten = "x.sock"\n')
    msg = load_error(main)
    assert msg.startswith(f"{dropin}: podrt.api.listen: "), msg


def test_error_names_main_file_when_dropin_touched_other_keys(main, tmp_path):
    write(main, '[podrt.api]\nlisten = "x.sock"\n')
    write(tmp_path / "podrt.d" / "10.toml", '[podrt.api]\nstream_port = 1\n')
    assert load_error(main).startswith(f"{main}: podrt.api.listen: ")


def test_override_errors_have_no_file_prefix(main):
    write(main, '[podrt]\nroot = "/ok"\n')
    msg = load_error(main, overrides={"podrt.root": "relative"})
    assert msg.startswith("podrt.root: must be an absolute path"), msg
    msg = load_error(main, overrides={"podrt.api.bogus": 1})
    assert msg == "podrt.api.bogus: unknown key"
    msg = load_error(main, overrides={"podrt.metrics.metrics_port": "9090"})
    assert msg == 'podrt.metrics.metrics_port: expected an integer, got string "9090"'


def test_string_with_newline_stays_one_line(main):
    write(main, '[podrt]\nroot = "a\\nb"\n')
    msg = load_error(main)
    assert msg.startswith(f"{main}: podrt.root: ") and "\\n" in msg


def test_quoted_key_with_newline_stays_one_line(main):
    write(main, '[podrt.api]\n"bo\\ngus" = 1\n')
    msg = load_error(main)  # asserts there is no newline
    assert msg.startswith(f"{main}: podrt.api.bo") and msg.endswith("gus: unknown key"), msg


@pytest.mark.parametrize("text", ["[podrt\nroot = 1\n", "[podrt]\nroot = \n",
                                  "[podrt]\nroot = '/a'\nroot = '/b'\n"])
def test_toml_syntax_error(main, text):
    write(main, text)
    msg = load_error(main)
    assert msg.startswith(f"{main}: invalid TOML: "), msg
    assert "line" in msg


def test_toml_syntax_error_in_dropin(main, tmp_path):
    write(main, "")
    dropin = write(tmp_path / "podrt.d" / "bad.toml", "x = [\n")
    assert load_error(main).startswith(f"{dropin}: invalid TOML: ")


def test_explicit_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    msg = load_error(missing)
    assert msg.startswith(f"{missing}: ") and "does not exist" in msg


def test_unreadable_path(tmp_path):
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    msg = load_error(directory)
    assert msg.startswith(f"{directory}: cannot read"), msg


def test_pod_metric_groups(main: Path) -> None:
    """CRI-O's included_pod_metrics: its group names, or "all" alone; unknown names are refused."""
    write(main, '[podrt.stats]\nincluded_pod_metrics = ["cpu", "network"]\n')
    assert load_config(main).stats.pod_metric_groups == {"cpu", "network"}
    write(main, '[podrt.stats]\nincluded_pod_metrics = ["all"]\ncollection_period = 0\n')
    loaded = load_config(main).stats
    assert "diskIO" in loaded.pod_metric_groups and len(loaded.pod_metric_groups) == 10 and loaded.collection_period == 0
    write(main, '[podrt.stats]\nincluded_pod_metrics = ["cpu", "gpu"]\n')
    assert 'podrt.stats.included_pod_metrics[1]: must be one of "cpu"' in load_error(main)
    write(main, '[podrt.stats]\nincluded_pod_metrics = ["all", "cpu"]\n')
    assert '"all" must be the only group' in load_error(main)
    write(main, '[podrt.stats]\ncollection_period = -1\n')
    assert "podrt.stats.collection_period: must be between 0 and 3600" in load_error(main)
