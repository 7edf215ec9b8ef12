"""The cgroup-v2 lane: the tests marked `cgroups` run inside a QEMU guest that
boots with the unified hierarchy only, so cgroup v2 is tested on hosts whose
own cgroups (v1 hybrid here) are never touched.

The guest is Debian's stock kernel (linux-image-*-amd64, unpacked from its
package, never installed) with a busybox initramfs (tests/vm/init). Its root is
this host's / shared read-only over virtio-9p with a tmpfs overlay on top, so it
runs the very runc, conmon, CNI plugins, Python and checkout the host has;
tests/vm/guest.sh then mounts cgroup2 and runs pytest. Results come back through
a second, writable 9p share (a temp dir): the pytest output and its exit code.

    python3 tests/vm/lane.py fetch          # the kernel, once (scripts/install-test-deps.sh does it)
    python3 tests/vm/lane.py run [-- PYTEST ARGS]   # boot, test, power off; exits with pytest's code
    python3 tests/vm/lane.py run --command 'podrt check'   # any command in the checkout instead

Without KVM (nested virtualisation is not offered on these machines) QEMU
emulates the CPU (TCG): things run 10 to 35 times slower than on the host (Python
the most: the daemon takes 20-60 s to start), and the tests scale their waits by
PODRT_TEST_TIME_FACTOR. The same run took 1.75 times longer on one CI machine as
on another whose host tests were as fast: the guest's time limit (--timeout,
2400 s) is some 2.5 times an idle machine's run, a stop for a hung guest only.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
GUEST_CREATE_FUZZ = 20  # CreateContainer fuzz requests in the guest (TCG is slow; the host runs 200)
CACHE = Path(os.environ.get("PODRT_VM_CACHE", "/var/cache/podrt-vm"))
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
# Not built into Debian's kernel, needed before the root is mounted, in load order.
BOOT_MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
                "netfs", "fscache", "9pnet", "9pnet_virtio", "9p", "overlay")
LANE_OPTIONS = ("-m", "cgroups", "-ra", "-p", "no:cacheprovider")
DEFAULT_PYTEST = (*LANE_OPTIONS, "tests/integration")
TIME_FACTOR = 10


def kernel_package() -> str:
    """The versioned image package Debian's linux-image-amd64 points at (not -cloud-: it lacks 9p)."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", out)
    if not found:
        raise SystemExit(f"cannot tell which kernel linux-image-amd64 depends on:\n{out}")
    return found.group(1)


def fetch() -> Path:
    """Download and unpack the kernel package into the cache (no install on the host)."""
    package = kernel_package()
    target = CACHE / package
    if (target / "boot").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        (deb,) = Path(tmp).glob("*.deb")
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        (modules,) = (unpacked / "lib" / "modules").iterdir()
        subprocess.run(["depmod", "-b", str(unpacked), modules.name], check=True)  # the guest's modprobe reads it
        unpacked.rename(target)
    return target


def kernel_parts(tree: Path) -> tuple[Path, Path]:
    (vmlinuz,) = (tree / "boot").glob("vmlinuz-*")
    (modules,) = (tree / "lib" / "modules").iterdir()
    return vmlinuz, modules


def _cpio_entry(name: str, mode: int, data: bytes = b"") -> bytes:
    """One record of the "newc" cpio format the kernel unpacks an initramfs from."""
    name_b = name.encode() + b"\0"
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name_b
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def initramfs(modules: Path, out: Path) -> None:
    """busybox, /init and the boot modules, as a gzipped newc archive."""
    entries = [_cpio_entry(d, 0o040755) for d in ("bin", "dev", "proc", "sys", "modules", "lower", "upper", "newroot")]
    entries.append(_cpio_entry("bin/busybox", 0o100755, BUSYBOX.read_bytes()))
    entries.append(_cpio_entry("init", 0o100755, (HERE / "init").read_bytes()))
    order = []
    for name in BOOT_MODULES:
        found = list(modules.glob(f"kernel/**/{name}.ko"))
        if len(found) != 1:  # a kernel built otherwise (built in, or compressed .ko.xz busybox cannot load)
            raise SystemExit(f"{modules}: no {name}.ko (found {found}); the lane expects Debian 12's linux-image-amd64")
        (path,) = found
        entries.append(_cpio_entry(f"modules/{name}.ko", 0o100644, path.read_bytes()))
        order.append(name)
    entries.append(_cpio_entry("modules/order", 0o100644, "\n".join(order).encode() + b"\n"))
    entries.append(_cpio_entry("TRAILER!!!", 0))
    out.write_bytes(gzip.compress(b"".join(entries), compresslevel=1))


def qemu_argv(vmlinuz: Path, initrd: Path, share: Path, memory_mb: int, cpus: int, modules: Path) -> list[str]:
    cmdline = (f"console=ttyS0 panic=-1 quiet podrt.repo={REPO} podrt.modules={modules} "
               "cgroup_no_v1=all")
    return [
        "qemu-system-x86_64", "-accel", "kvm:tcg" if _kvm_works() else "tcg,thread=multi", "-cpu", "max",
        "-smp", str(cpus), "-m", str(memory_mb), "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={share},mount_tag=laneout,security_model=none,multidevs=remap",
    ]


def _kvm_works() -> bool:
    """Only when asked (PODRT_VM_KVM=1): /dev/kvm exists on these machines but
    its nested guests stall in the firmware, so TCG is the default."""
    return os.environ.get("PODRT_VM_KVM") == "1" and os.access("/dev/kvm", os.R_OK | os.W_OK)


def run(pytest_args: list[str], timeout: float, memory_mb: int, cpus: int, command: str = "", out: Path | None = None) -> int:
    tree = fetch()
    vmlinuz, modules = kernel_parts(tree)
    with tempfile.TemporaryDirectory(prefix="podrt-vm-") as tmp:
        work = Path(tmp)
        share = out or work / "out"
        share.mkdir(parents=True, exist_ok=True)
        initramfs(modules, work / "initramfs.gz")
        compile_for_guest()
        if command:  # guest.sh reads pytest.args either way
            (share / "command").write_text(command)
        else:
            pytest_args = pytest_args or lane_selection()
        (share / "pytest.args").write_text("\n".join(pytest_args) + "\n")
        (share / "env").write_text(f"PODRT_TEST_TIME_FACTOR={TIME_FACTOR}\nPODRT_CREATE_FUZZ_COUNT={GUEST_CREATE_FUZZ}\n")
        argv = qemu_argv(vmlinuz, work / "initramfs.gz", share, memory_mb, cpus, modules)
        print(f"[lane] {' '.join(argv)}", flush=True)
        started = time.monotonic()
        code = _boot(argv, timeout)
        took = time.monotonic() - started
        result = share / "rc"
        rc = int(result.read_text()) if result.exists() else None
        if rc is None:
            print(f"[lane] the guest gave no result (qemu exited with {code} after {took:.0f} s)", flush=True)
            return 1
        print(f"[lane] {'the command' if command else 'pytest'} in the cgroup-v2 guest exited with {rc}; "
              f"the lane took {took:.0f} s", flush=True)
        return rc


def _host_env() -> dict[str, str]:
    """This environment without PYTHONDONTWRITEBYTECODE: what the host compiles is for the guest."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_for_guest() -> None:
    """Compile the checkout into its own __pycache__ dirs on the host, in
    seconds: the guest, some 30 times slower at Python, reads them through the
    9p root instead of compiling each module of it again."""
    subprocess.run([str(PYTHON), "-m", "compileall", "-q", "src", "tests"], cwd=REPO, env=_host_env(), check=True,
                   stdout=subprocess.DEVNULL)


def lane_selection() -> list[str]:
    """The default run: the host collects the `cgroups` tests (writing pytest's
    rewritten modules for the guest as it goes) and the guest gets their files
    only, so it imports those few test modules, not all of tests/integration (its
    collection alone took 150 s). Where the host cannot tell, the whole dir."""
    found = subprocess.run([str(PYTHON), "-m", "pytest", "--collect-only", "-q", *DEFAULT_PYTEST], cwd=REPO,
                           env=_host_env(), capture_output=True, text=True, check=False)
    files = sorted({line.split("::", 1)[0] for line in found.stdout.splitlines() if "::" in line})
    if found.returncode != 0 or not files:
        return list(DEFAULT_PYTEST)
    return [*LANE_OPTIONS, *files]


def _boot(argv: list[str], timeout: float) -> int | None:
    """Run QEMU with the guest's console on our stdout; stopped (by PID) after `timeout`."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"[lane] the guest ran over {timeout:.0f} s: stopping it", flush=True)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        return None
    except BaseException:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("fetch", "run"))
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("PODRT_VM_TIMEOUT", 2400)))
    parser.add_argument("--memory", type=int, default=4096, help="guest memory in MiB")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--command", default="", help="a shell command to run in the guest instead of pytest")
    parser.add_argument("--out", type=Path, help="keep the guest's results share here (/lane-out in the guest)")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments (default: the cgroups subset)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the lane needs root (podrt runs as root in the guest, and the 9p share must read all of /)", file=sys.stderr)
        return 2
    if args.action == "fetch":
        print(fetch())
        return 0
    if shutil.which("qemu-system-x86_64") is None:
        print("qemu-system-x86_64 not found: apt-get install --no-install-recommends qemu-system-x86", file=sys.stderr)
        return 2
    return run(args.pytest_args, args.timeout, args.memory, args.cpus, args.command, args.out)


if __name__ == "__main__":
    sys.exit(main())
