"""The `podrt` command: config printing, config errors, flags over files."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tomllib
from pathlib import Path

from tests.support.daemon import podrt_command


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(podrt_command(*args), capture_output=True, text=True, timeout=60)


def test_config_prints_defaults_as_toml(tmp_path: Path) -> None:
    missing_dropins = tmp_path / "podrt.toml"
    missing_dropins.write_text("")
    out = run("config", "--config", str(missing_dropins))
    assert out.returncode == 0, out.stderr
    cfg = tomllib.loads(out.stdout)["podrt"]
    assert cfg["root"] == "/var/lib/podrt"
    assert cfg["runroot"] == "/run/podrt"
    assert cfg["api"]["listen"] == "/run/podrt/podrt.sock"
    assert cfg["api"]["socket_mode"] == "0660"
    assert cfg["network"]["network_dir"] == "/etc/cni/net.d"
    assert cfg["network"]["plugin_dirs"] == ["/usr/lib/cni", "/opt/cni/bin"]
    assert cfg["runtime"]["cgroup_manager"] == "cgroupfs"
    assert cfg["runtime"]["infra_oom_score_adj"] == -998
    assert cfg["runtime"]["shm_size"] == "64Mi"
    assert cfg["metrics"]["enable_metrics"] is False
    assert cfg["metrics"]["metrics_host"] == "127.0.0.1"


def test_flags_override_file(tmp_path: Path) -> None:
    conf = tmp_path / "podrt.toml"
    conf.write_text('[podrt]\nroot = "/srv/a"\n[podrt.network]\nnetwork_dir = "/srv/cni"\n')
    out = run(
        "config", "--config", str(conf), "--root", "/srv/b", "--listen", "/srv/s.sock",
        "--cni-plugin-dir", "/p1", "--cni-plugin-dir", "/p2", "--log-level", "debug",
    )
    assert out.returncode == 0, out.stderr
    cfg = tomllib.loads(out.stdout)["podrt"]
    assert cfg["root"] == "/srv/b"
    assert cfg["network"]["network_dir"] == "/srv/cni"
    assert cfg["network"]["plugin_dirs"] == ["/p1", "/p2"]
    assert cfg["api"]["listen"] == "/srv/s.sock"
    assert cfg["log_level"] == "debug"


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def test_unknown_key_is_one_line_error(tmp_path: Path) -> None:
    conf = tmp_path / "podrt.toml"
    conf.write_text("[podrt.api]\nlisten_typo = '/x'\n")
    line = _one_error_line(run("serve", "--config", str(conf)))
    assert "podrt.api.listen_typo" in line and "unknown key" in line and str(conf) in line


def test_wrong_type_is_one_line_error(tmp_path: Path) -> None:
    conf = tmp_path / "podrt.toml"
    conf.write_text("[podrt.metrics]\nmetrics_port = 'abc'\n")
    line = _one_error_line(run("serve", "--config", str(conf)))
    assert "podrt.metrics.metrics_port" in line


def test_relative_path_flag_is_one_line_error(tmp_path: Path) -> None:
    conf = tmp_path / "podrt.toml"
    conf.write_text("")
    line = _one_error_line(run("serve", "--config", str(conf), "--root", "var/lib/podrt"))
    assert "podrt.root" in line and "absolute" in line


def test_missing_config_file_is_one_line_error(tmp_path: Path) -> None:
    line = _one_error_line(run("serve", "--config", str(tmp_path / "nope.toml")))
    assert "nope.toml" in line


def test_check_reports_each_part(tmp_path: Path) -> None:
    conf = tmp_path / "podrt.toml"
    conf.write_text(f'[podrt.network]\nnetwork_dir = "{tmp_path}/cni"\n[podrt.runtime.runtimes.runc]\nruntime_path = "{tmp_path}/no-runc"\nruntime_root = "/run/podrt/runc"\n')
    out = run("check", "--config", str(conf))
    assert out.returncode == 1  # runc is missing at that path
    assert f"[FAIL] runtime runc: {tmp_path}/no-runc not found" in out.stdout
    assert "fix: " in out.stdout
    assert "[ok  ] conmon" in out.stdout
    assert "[warn] CNI network config" in out.stdout
    assert "[ok  ] CNI plugin bridge" in out.stdout
    assert out.stdout.strip().endswith("host is NOT ready for podrt")


# ---- image import --name ------------------------------------------------------


def test_image_import_name_flag(tmp_path: Path) -> None:
    from tests.unit.test_image_archive import Oci, docker_save, sha

    conf = tmp_path / "podrt.toml"
    conf.write_text("")
    flags = ("--config", str(conf), "--root", str(tmp_path / "root"))
    saved = tmp_path / "saved.tar"
    config, _ = docker_save(saved, ["busybox:1.36"])
    out = run("image", "import", str(saved), "--name", "registry.local/tools/busybox:air", *flags)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["registry.local/tools/busybox:air", sha(config)]

    two = Oci()
    for tag in (b"a", b"b"):
        two.add(two.image(tag=tag)[0], **{"org.opencontainers.image.ref.name": tag.decode()})
    archive = two.write_tar(tmp_path / "two.tar")
    line = _one_error_line(run("image", "import", str(archive), "--name", "app:1", *flags))
    assert line.startswith(f"podrt: {archive}: ") and "holds 2 images" in line and "--name docker.io/library/app:1" in line
    out = run("image", "import", str(archive), *flags)  # without a name: each by its own
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["localhost/a:latest", "localhost/b:latest"]

    line = _one_error_line(run("image", "import", str(saved), "--name", "Not/Lower", *flags))
    assert line == 'podrt: invalid image reference "Not/Lower": repository name must be lowercase'


# ---- a closed pipe ------------------------------------------------------------


def test_closed_stdout_ends_quietly_with_sigpipes_status(tmp_path: Path) -> None:
    """The reader is gone before podrt writes: no traceback, the status a shell
    gives a command SIGPIPE killed (128 + 13)."""
    conf = tmp_path / "podrt.toml"
    conf.write_text("")
    for args, status in ((("config", "--config", str(conf)), 141), (("version",), 141),
                         (("--help",), 0)):  # argparse drops its help's write error itself, then exits 0
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            out = subprocess.run(podrt_command(*args), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(write_end)
        assert (out.returncode, out.stderr) == (status, ""), (args, out.stderr)


def test_image_ls_into_head(tmp_path: Path) -> None:
    """`podrt image ls | head -1` through a real pipe, with far more lines
    than the pipe holds: head's line, podrt's exit status 141, nothing on stderr."""
    from podrt.images.store import ImageRecord, ImageStore

    store = ImageStore(tmp_path / "root" / "images")
    store.prepare()
    for n in range(1500):  # ~150 KB of listing: a pipe holds 64 KiB
        hex_ = hashlib.sha256(str(n).encode()).hexdigest()
        record = ImageRecord(id=f"sha256:{hex_}", repo_tags=(f"example.com/many/image-{n:04d}:latest",), repo_digests=(),
                             manifest_digest=f"sha256:{hex_}", layers=(), size=1000, created_at=1)
        (store.records_dir / f"{hex_}.json").write_bytes(record.to_json())
    conf = tmp_path / "podrt.toml"
    conf.write_text("")
    command = " ".join(shlex.quote(a) for a in podrt_command("image", "ls", "--config", str(conf), "--root", str(tmp_path / "root")))
    out = subprocess.run(["bash", "-c", f'{command} | head -1; echo "status ${{PIPESTATUS[0]}}"'],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines()[0].split()[:2] == ["IMAGE", "ID"]
    assert out.stdout.splitlines()[1:] == ["status 141"]
    assert out.stderr == ""
