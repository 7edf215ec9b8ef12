"""The two runtimes bench_peer.py compares, each started on private dirs in a
cgroup the benchmark made: podrt from this checkout, and Debian's containerd
(apt-get install containerd) with a config of its own (root, state, socket, CNI
network, runc root). What a runtime made goes when its context ends: its pods by
CRI, then the daemon by PID, then whatever is left in its cgroup, its mounts,
its bridge and the cgroup itself.

Host CPU is the cgroup's: the daemon starts in <cgroup>/daemon and every pod's
cgroup_parent is <cgroup>/pods, so the daemon, its children (CNI plugins,
containerd's shims, podrt's conmons, runc) and what runs in the pods are all
counted, dead children included (a cgroup's usage keeps what its removed
children used)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import tomli_w
from common import wait_ready, write_config  # beside this script
from grpclib.client import Channel

from podrt.api.runtime import v1 as cri
from podrt.host.cgroups.hierarchy import CGROUP_ROOT, hierarchies, unified
from tests.support.daemon import DaemonDirs
from tests.support.leaks import scrub_daemon_dirs
from tests.support.registry import BuiltImage, digest, image

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
SHIM = "containerd-shim-runc-v2"
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
CATATONIT = Path("/usr/bin/catatonit")
PAUSE_REF = "podrt.local/pause:builtin"  # podrt's builtin pause image: catatonit -P
K8S_NS = "k8s.io"  # containerd's namespace for CRI
# Each runtime's own bridge and subnet: beside the tests' (podrttest0, podrtcni0) and bench_sandbox's (podrtbench0).
NETWORKS = {"podrt": ("podrtpeerp0", "10.233.132.0/22"), "containerd": ("podrtpeerc0", "10.233.136.0/22")}
# Plugins the benchmark needs not: other snapshotters, tracing (containerd 1.6's tasks service
# needs the v1 shim runtime loaded, unused as it is).
DISABLED_PLUGINS = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
# containerd's shims put their sockets here whatever the config says (containerd 1.6)
SHIM_SOCKETS = Path("/run/containerd/s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchCgroup:
    """<name>/<runtime> in the cpuacct hierarchy (v1) or the v2 tree; the daemon
    goes in its `daemon` child, pods under its `pods` child."""

    def __init__(self, name: str) -> None:
        self.rel = name.strip("/")
        self.v2 = unified(CGROUP_ROOT)
        self.dir = CGROUP_ROOT / self.rel if self.v2 else CGROUP_ROOT / "cpuacct" / self.rel
        (self.dir / "daemon").mkdir(parents=True)

    @property
    def pods_parent(self) -> str:
        """The pods' cgroup_parent (cgroupfs): runc makes it in every hierarchy."""
        return f"/{self.rel}/pods"

    def wrap(self, argv: list[str]) -> list[str]:
        """argv started inside the daemon cgroup (the shell joins it, then execs)."""
        procs = self.dir / "daemon" / "cgroup.procs"
        return ["/bin/sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def cpu_seconds(self) -> float:
        if self.v2:
            for line in (self.dir / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            raise RuntimeError("no usage_usec in cpu.stat")
        return int((self.dir / "cpuacct.usage").read_text()) / 1e9

    def pids(self) -> list[int]:
        return sorted({int(p) for f in self.dir.rglob("cgroup.procs") for p in f.read_text().split()})

    def kill_all(self, wait: float = 10.0) -> list[int]:
        """SIGKILL what is still in the cgroup (a failed run's shims, conmons,
        containers): all of it started by the runtime under test. The PIDs found."""
        deadline = time.monotonic() + wait
        left = self.pids()
        found = list(left)
        while left and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
            left = self.pids()
        return found

    def remove(self) -> None:
        """This runtime's tree in every hierarchy (runc made the pods' parents in all),
        deepest first, then the benchmark's top once empty."""
        for h in hierarchies():
            for dirpath, _, _ in sorted(os.walk(h / self.rel), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
            with contextlib.suppress(OSError):
                (h / self.rel).parent.rmdir()


@attrs.frozen
class Runtime:
    name: str
    sock: Path
    image: str  # busybox, by the same reference in both
    pid: int  # the daemon
    cgroup: BenchCgroup
    base: Path
    metrics_url: str | None = None  # podrt's Prometheus endpoint

    @property
    def log_root(self) -> Path:
        """Pods' log_directory parents (the kubelet's /var/log/pods)."""
        return self.base / "podlogs"


def conflist(directory: Path, runtime: str, ipam_dir: Path) -> None:
    """The same network shape for both: a bridge (no gateway, no masquerade: the host's
    routing untouched) and portmap, on the runtime's own bridge and subnet."""
    bridge, subnet = NETWORKS[runtime]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "10-peer.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": f"podrt-peer-{runtime}",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}))


def pause_image() -> BuiltImage:
    """podrt's builtin pause image as containerd can import it: the host's static catatonit, run as `catatonit -P`."""
    return image({"catatonit": CATATONIT.read_bytes()}, modes={"catatonit": 0o755}, cmd=(),
                 extra_config={"Entrypoint": ["/catatonit", "-P"], "StopSignal": "SIGTERM"})


def oci_archive(path: Path, images: dict[str, BuiltImage]) -> None:
    """An OCI image layout tar of `images` (reference -> image), named for `ctr images import`."""
    blobs: dict[str, bytes] = {}
    manifests = []
    for ref, img in images.items():
        for data in (img.manifest, img.config, *img.layers):
            blobs[digest(data)] = data
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.digest,
                          "size": len(img.manifest), "platform": {"os": "linux", "architecture": "amd64"},
                          "annotations": {"io.containerd.image.name": ref,
                                          "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}})
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps({"schemaVersion": 2, "manifests": manifests}).encode(),
             **{f"blobs/sha256/{d.split(':')[1]}": data for d, data in blobs.items()}}
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


# What critest's images name, for a mirror on the loopback registry (as /work/shared/critest's kit maps them for podrt)
MIRRORED = ("localhost", "registry.k8s.io", "gcr.io", "docker.io", "quay.io", "public.ecr.aws")


def mirror_registries_conf(path: Path, registry: str) -> Path:
    """podrt's side of write_mirrors: a registries.conf whose every MIRRORED prefix (and any other
    reference) is pulled from `registry` on 127.0.0.1."""
    if not registry.startswith("127.0.0.1:"):
        raise ValueError(f"the mirror must be on 127.0.0.1, got {registry}")
    entries = [f'[[registry]]\nprefix = "{name}"\nlocation = "{registry}"\ninsecure = true\n' for name in MIRRORED]
    path.write_text("\n".join([*entries, f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n']))
    return path


def write_mirrors(hosts_dir: Path, registry: str) -> None:
    """containerd's hosts.toml per registry in MIRRORED: every pull goes to `registry`
    (plain HTTP; refused unless on 127.0.0.1), its own server field too, so nothing falls back to the internet."""
    if not registry.startswith("127.0.0.1:"):
        raise ValueError(f"the mirror must be on 127.0.0.1, got {registry}")
    for name in MIRRORED:
        (hosts_dir / name).mkdir(parents=True)
        (hosts_dir / name / "hosts.toml").write_text(
            f'server = "http://{registry}"\n\n[host."http://{registry}"]\n  capabilities = ["pull", "resolve"]\n')


def containerd_config(base: Path, mirror: str | None = None) -> dict[str, object]:
    """`mirror`: a registry on 127.0.0.1 that every pull goes to (for critest); else pulls have nowhere to go."""
    cri = "io.containerd.grpc.v1.cri"
    if mirror:
        write_mirrors(base / "hosts", mirror)
    return {
        "version": 2,
        "root": str(base / "root"),
        "state": str(base / "state"),
        "temp": str(base / "tmp"),
        "disabled_plugins": DISABLED_PLUGINS,
        "grpc": {"address": str(base / "containerd.sock")},
        "plugins": {
            cri: {
                "sandbox_image": PAUSE_REF,
                "restrict_oom_score_adj": True,  # these hosts refuse a lower oom_score_adj than the daemon's
                "netns_mounts_under_state_dir": True,  # netns pins in its state dir, not /run/netns
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
                "enable_selinux": False,
                "cni": {"bin_dir": CNI_BIN, "conf_dir": str(base / "cni"), "max_conf_num": 1},
                "registry": {"config_path": str(base / "hosts")},
                "containerd": {
                    "snapshotter": "overlayfs",
                    "default_runtime_name": "runc",
                    "runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2", "options": {
                        "BinaryName": RUNC, "Root": str(base / "runc"), "SystemdCgroup": False}}},
                },
            },
            "io.containerd.internal.v1.opt": {"path": str(base / "opt")},
        },
    }


def missing_containerd() -> str | None:
    """Why containerd cannot run here, or None."""
    for path in (CONTAINERD, CTR):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install containerd"
    if shutil.which(SHIM) is None:
        return f"{SHIM} is not in PATH"
    return None


def _drain(name: str, sock: Path) -> None:
    """Every pod of the runtime's stopped and removed over CRI (a failed run's too):
    the runtime itself unmounts, removes its netns, veths, leases, containers."""
    async def drain() -> None:
        ch = Channel(path=str(sock))
        try:
            stub = cri.RuntimeServiceStub(ch)
            pods = (await stub.list_pod_sandbox(cri.ListPodSandboxRequest(), timeout=60)).items
            sem = asyncio.Semaphore(16)

            async def one(pod_id: str) -> None:
                async with sem:
                    await stub.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
                    await stub.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
            await asyncio.gather(*(one(p.id) for p in pods))
        finally:
            ch.close()

    try:
        asyncio.run(drain())
    except Exception as e:  # the scrub below still runs
        print(f"  ({name}: removing its pods failed: {e!r})", file=sys.stderr)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _unmount_under(base: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f if line.split()[4].startswith(str(base) + "/")]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


@contextlib.contextmanager
def _serving(name: str, base: Path, argv: list[str], sock: Path, cgroup_name: str,
             env: dict[str, str] | None = None) -> Iterator[tuple[int, BenchCgroup]]:
    """argv started in the runtime's cgroup, until it answers on sock: (its PID, the cgroup).
    Afterwards its pods go over CRI, the daemon by PID, what is left in its cgroup
    (shims and their containers outlive containerd) is killed, then its mounts, bridge and cgroup go."""
    cg = BenchCgroup(f"{cgroup_name}/{name}")
    proc = None
    try:
        with open(base / "daemon.log", "wb") as log:
            proc = subprocess.Popen(cg.wrap(argv), stdout=subprocess.DEVNULL, stderr=log, env=env,
                                    start_new_session=True)  # its own session, as a service manager starts it
        asyncio.run(wait_ready(sock, timeout=60))
        try:
            yield proc.pid, cg
        finally:
            _drain(name, sock)
    finally:
        if proc is not None:
            _stop(proc)
        if cg.kill_all():
            print(f"  ({name}: processes were left in its cgroup; killed)", file=sys.stderr)
        _unmount_under(base)
        subprocess.run(["ip", "link", "del", NETWORKS[name][0]], capture_output=True)
        cg.remove()


@contextlib.contextmanager
def podrt_runtime(registries_conf: Path, image_ref: str, cgroup_name: str) -> Iterator[Runtime]:
    """podrt from this checkout, pulling busybox from the loopback registry; metrics on a free loopback port."""
    base = Path(tempfile.mkdtemp(prefix="podrt-peer-podrt-"))
    try:
        conflist(base / "cni", "podrt", base / "ipam")
        port = free_port()
        cfg = write_config(base, image={"registries_conf": str(registries_conf)},
                           metrics={"enable_metrics": True, "metrics_host": "127.0.0.1", "metrics_port": port})
        sock = base / "run" / "podrt.sock"
        with _serving("podrt", base, [sys.executable, "-m", "podrt.cli", "serve", "--config", str(cfg)], sock,
                      cgroup_name) as (pid, cg):
            yield Runtime("podrt", sock, image_ref, pid, cg, base, f"http://127.0.0.1:{port}/metrics")
    finally:
        scrub_daemon_dirs(DaemonDirs(base))
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def containerd_runtime(busybox: BuiltImage, image_ref: str, cgroup_name: str, mirror: str | None = None) -> Iterator[Runtime]:
    """Debian's containerd on a private config, busybox and the pause image imported with ctr
    (`mirror`: see containerd_config)."""
    base = Path(tempfile.mkdtemp(prefix="podrt-peer-ctrd-"))
    made_run = [p for p in (SHIM_SOCKETS.parent, SHIM_SOCKETS) if not p.exists()]
    made_cni_cache = not Path("/var/lib/cni").exists()  # libcni's default cache (containerd 1.6 sets none)
    try:
        conflist(base / "cni", "containerd", base / "ipam")
        (base / "config.toml").write_text(tomli_w.dumps(containerd_config(base, mirror)))
        sock = base / "containerd.sock"
        env = {**os.environ, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}  # the shim
        argv = [CONTAINERD, "--config", str(base / "config.toml"), "--log-level", "warn"]
        with _serving("containerd", base, argv, sock, cgroup_name, env) as (pid, cg):
            oci_archive(base / "images.tar", {image_ref: busybox, PAUSE_REF: pause_image()})
            subprocess.run([CTR, "--address", str(sock), "-n", K8S_NS, "images", "import", str(base / "images.tar")],
                           check=True, capture_output=True)
            yield Runtime("containerd", sock, image_ref, pid, cg, base)
    finally:
        for d in reversed(made_run):
            with contextlib.suppress(OSError):
                d.rmdir()
        if made_cni_cache:
            shutil.rmtree("/var/lib/cni", ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
