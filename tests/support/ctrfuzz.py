"""Semi-valid CreateContainer requests: a valid pod and image, then one odd
field per request (command, paths, resources, security context, ...), and a
driver that takes each created container through start, exec, stop and
remove. What counts is the status of every answer: a request's fault is a
client-side status (InvalidArgument, FailedPrecondition, NotFound, ...),
never INTERNAL or UNKNOWN.

SAFETY: host paths in requests (mount and seccomp sources) are inside the
scratch dir, or are device nodes under /dev (read as devices, never written
through); image references name the pulled image or are malformed or point at
a closed port on loopback (CreateContainer never pulls).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.support.client import CriClient
from tests.support.slow import FACTOR

Mutation = Callable[[random.Random, cri.ContainerConfig], str]  # changes the config, returns what it did
SERVER_SIDE = {Status.INTERNAL, Status.UNKNOWN, Status.DATA_LOSS, Status.UNIMPLEMENTED}

_ODD_TEXT = ["", " ", "é", "\u202e", "a" * 300, "x" * 5000, "a\nb", "-", ".", "..", "/", "//", "\\", "$(id)", "%s"]
_PATHS = ["", ".", "..", "/", "/etc", "/proc/sys", "/etc/passwd", "/nonexistent/deep/x", "relative", "a/../b",
          "/dev/null", "/bin", "/x" * 2100, "/" + "n" * 300, "/é", "/tmp", "/proc", "/sys/kernel", "/dev/zero/x"]
_CPU_LISTS = ["", "0", "0-1", "1,0", "0-", "-1", "/dev/sda", "é", "99999", "0-99999", "1-0", "0,,1", "0-1-2", " 0", "0x1",
              "4294967296", "0\n1", "a-b"]
_PAGE_SIZES = ["2MB", "1GB", "3MB", "64KB", "16GB", "2mb", "0MB", "", "2MiB", "4KB"]
_UNIFIED = [("memory.high", "max"), ("memory.high", "abc"), ("memory.high", "1048576"), ("cpu.weight", "100"),
            ("cpu.weight", "0"), ("pids.max", "10"), ("pids.max", "-5"), ("foo.bar", "1"), ("cgroup.procs", "1"),
            ("cgroup.subtree_control", "+cpu"), ("memory.max", "é"), ("io.weight", "default 100"), ("cpu.max", "a b c")]
_CAPS = ["CAP_SYS_ADMIN", "SYS_ADMIN", "ALL", "all", "NOPE", "cap_net_raw", "", "CAP_", "CAP_CHOWN", "NET_RAW",
         "CAP_BPF", "CAP_LAST_CAP", "é"]
_INTS = [0, 1, -1, 2, 7, 1000, 65534, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, -(2**63)]
_DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/nonexistent", "/etc/passwd", "/dev", "/dev/pts", "dev/null", ""]
_USERS = ["", "nobody", "root", "nosuchuser", "0", "1000", "é", "a:b", "-", "x" * 300]


def _sc(cfg: cri.ContainerConfig) -> cri.LinuxContainerSecurityContext:
    return cfg.linux.security_context


def _res(cfg: cri.ContainerConfig) -> cri.LinuxContainerResources:
    if not cfg.linux.is_set("resources"):
        cfg.linux.resources = cri.LinuxContainerResources()
    return cfg.linux.resources


@dataclass
class CreateFuzzer:
    """Seeded mutations of a valid ContainerConfig; host paths stay in `scratch`."""

    seed: int
    scratch: Path
    image: str
    rng: random.Random = field(init=False)
    mutations: list[Mutation] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.scratch.mkdir(parents=True, exist_ok=True)
        (self.scratch / "dir").mkdir(exist_ok=True)
        (self.scratch / "file").write_text("x\n")
        (self.scratch / "seccomp-junk.json").write_text("{not json")
        (self.scratch / "seccomp-empty.json").write_text("{}")
        (self.scratch / "seccomp-odd.json").write_text('{"defaultAction": "SCMP_ACT_NOPE", "syscalls": [{"names": 1}]}')
        self.mutations = [getattr(self, n) for n in sorted(dir(self)) if n.startswith("m_")]

    def base(self, name: str) -> cri.ContainerConfig:
        """What the kubelet sends for a plain container: runs until stopped."""
        return cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=self.image),
            command=["/bin/sleep", "3600"], log_path=f"{name}.log",
            linux=cri.LinuxContainerConfig(
                resources=cri.LinuxContainerResources(),
                security_context=cri.LinuxContainerSecurityContext(
                    namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.CONTAINER))))

    def request(self, n: int) -> tuple[str, cri.ContainerConfig]:
        """The n-th request: the base, one mutation (sometimes two)."""
        cfg = self.base(f"c{n}")
        picks = self.rng.sample(self.mutations, 2 if self.rng.random() < 0.15 else 1)
        return "; ".join(m(self.rng, cfg) for m in picks), cfg

    def _host_path(self, rng: random.Random) -> str:
        return rng.choice([str(self.scratch / "dir"), str(self.scratch / "file"), str(self.scratch / "missing"),
                           str(self.scratch / "dir") + "/", str(self.scratch) + "/../" + self.scratch.name + "/dir",
                           "relative/x", "", str(self.scratch / "dir\0x")])

    # ---- the mutations: each changes one part of the config ----------------

    def m_command(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        cmd = rng.choice(_PATHS + ["/bin/true", "/bin/false", "sleep", "/bin/sh", "nosuchcmd", "/bin/sleep\0x", "é"])
        cfg.command = [cmd] + (["3600"] if rng.random() < 0.5 else [])
        return f"command={cfg.command!r:.60}"

    def m_no_command(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        cfg.command, cfg.args = [], rng.choice([[], ["3600"], ["sleep", "3600"], ["\0"]])
        return f"no command, args={cfg.args!r}"

    def m_args(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        cfg.args = [rng.choice(_ODD_TEXT + ["3600", "\0", "a\0b"]) for _ in range(rng.randint(1, 4))]
        return f"args={cfg.args!r:.60}"

    def m_working_dir(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        cfg.working_dir = rng.choice(_PATHS + ["/\0", "/root", "/nonexistent"])
        return f"working_dir={cfg.working_dir!r:.60}"

    def m_env(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        key = rng.choice(["", "A=B", "A\0", "é", "PATH", "HOME", "x" * 5000, "1A", "A B", "A\nB", "OK"])
        value = rng.choice(_ODD_TEXT + ["v\0v"])
        cfg.envs = [cri.KeyValue(key=key, value=value.encode("utf-8", "surrogatepass"))]
        return f"env {key!r:.30}={value!r:.30}"

    def m_log_path(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        cfg.log_path = rng.choice(["", ".", "..", "./", "x" * 5000, "a/b/c.log", "../x.log", "/abs.log", "dir/", "a\0b",
                                   "é.log", "x" * 256 + ".log", "x" * 250 + ".log", "a//b.log", "sub/" * 1100 + "x.log"])
        return f"log_path={cfg.log_path!r:.60}"

    def m_mount(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        m = cri.Mount(container_path=rng.choice(_PATHS + ["/data", "/mnt/x", "/proc/x", "/sys/x", "/dev/shm", "/etc/hosts"]),
                      host_path=self._host_path(rng), readonly=rng.random() < 0.5,
                      propagation=rng.choice([0, 0, 1, 2, 3, 7]), selinux_relabel=rng.random() < 0.2)
        cfg.mounts = [m]
        return f"mount {m.host_path!r:.50} -> {m.container_path!r:.40} ro={m.readonly} prop={m.propagation}"

    def m_two_mounts(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        target = rng.choice(["/data", "/", "/etc"])
        cfg.mounts = [cri.Mount(container_path=target, host_path=str(self.scratch / "dir")),
                      cri.Mount(container_path=target, host_path=str(self.scratch / "file"))]
        return f"two mounts on {target}"

    def m_device(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        d = cri.Device(container_path=rng.choice(["/dev/x", "/dev/null", "dev/x", "", "/dev/../etc/x", "/proc/x", "/etc/passwd"]),
                       host_path=rng.choice(_DEVICES), permissions=rng.choice(["rwm", "r", "", "x", "rr", "mwr", "RWM"]))
        cfg.devices = [d]
        return f"device {d.host_path!r} -> {d.container_path!r} {d.permissions!r}"

    def m_cpuset(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        res = _res(cfg)
        if rng.random() < 0.6:
            res.cpuset_cpus = rng.choice(_CPU_LISTS)
        else:
            res.cpuset_mems = rng.choice(_CPU_LISTS)
        return f"cpuset cpus={res.cpuset_cpus!r} mems={res.cpuset_mems!r}"

    def m_cpu(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        res = _res(cfg)
        name = rng.choice(["cpu_shares", "cpu_quota", "cpu_period"])
        setattr(res, name, rng.choice(_INTS + [2, 1024, 262144, 262145, 100000, 999, 1_000_001]))
        return f"{name}={getattr(res, name)}"

    def m_memory(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        res = _res(cfg)
        res.memory_limit_in_bytes = rng.choice([0, 1, 4096, 1 << 20, 6 << 20, 64 << 20, 2**62, 2**63 - 1, -1])
        if rng.random() < 0.5:
            res.memory_swap_limit_in_bytes = rng.choice([0, -1, -2, 1, 64 << 20, 2**63 - 1])
        return f"memory={res.memory_limit_in_bytes} swap={res.memory_swap_limit_in_bytes}"

    def m_oom_score_adj(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        _res(cfg).oom_score_adj = rng.choice([-1001, -1000, -999, 0, 999, 1000, 1001, 2**31 - 1])
        return f"oom_score_adj={_res(cfg).oom_score_adj}"

    def m_hugepages(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        _res(cfg).hugepage_limits = [cri.HugepageLimit(page_size=rng.choice(_PAGE_SIZES), limit=rng.choice([0, 2 << 20, 1, 2**63 - 1]))
                                     for _ in range(rng.randint(1, 2))]
        return f"hugepages {[(h.page_size, h.limit) for h in _res(cfg).hugepage_limits]}"

    def m_unified(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        key, value = rng.choice(_UNIFIED)
        _res(cfg).unified = {key: value}
        return f"unified {key}={value!r}"

    def m_user(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        sc = _sc(cfg)
        choice = rng.randrange(4)
        if choice == 0:
            sc.run_as_user = cri.Int64Value(value=rng.choice(_INTS))
        elif choice == 1:
            sc.run_as_group = cri.Int64Value(value=rng.choice(_INTS))
        elif choice == 2:
            sc.run_as_username = rng.choice(_USERS)
        else:
            sc.supplemental_groups = [rng.choice(_INTS) for _ in range(rng.randint(1, 3))]
        return f"user={sc.run_as_user} group={sc.run_as_group} name={sc.run_as_username!r:.30} groups={sc.supplemental_groups}"

    def m_groups_policy(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        _sc(cfg).supplemental_groups_policy = rng.choice([0, 1, 2, 9])
        return f"supplemental_groups_policy={_sc(cfg).supplemental_groups_policy}"

    def m_capabilities(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        caps = cri.Capability(add_capabilities=rng.sample(_CAPS, rng.randint(0, 2)),
                              drop_capabilities=rng.sample(_CAPS, rng.randint(0, 2)))
        if rng.random() < 0.3:
            caps.add_ambient_capabilities = rng.sample(_CAPS, 1)
        _sc(cfg).capabilities = caps
        return f"caps add={caps.add_capabilities} drop={caps.drop_capabilities} ambient={caps.add_ambient_capabilities}"

    def m_flags(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        sc = _sc(cfg)
        sc.readonly_rootfs, sc.no_new_privs, sc.privileged = (rng.random() < 0.5 for _ in range(3))
        cfg.tty, cfg.stdin, cfg.stdin_once = (rng.random() < 0.5 for _ in range(3))
        return f"ro={sc.readonly_rootfs} nnp={sc.no_new_privs} priv={sc.privileged} tty={cfg.tty} stdin={cfg.stdin}/{cfg.stdin_once}"

    def m_seccomp(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        ref = rng.choice(["", "prof.json", str(self.scratch / "missing.json"), str(self.scratch / "seccomp-junk.json"),
                          str(self.scratch / "seccomp-empty.json"), str(self.scratch / "seccomp-odd.json"), str(self.scratch / "dir")])
        _sc(cfg).seccomp = cri.SecurityProfile(profile_type=rng.choice([0, 1, 2, 5]), localhost_ref=ref)
        return f"seccomp {_sc(cfg).seccomp.profile_type} {ref!r:.50}"

    def m_apparmor(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        if rng.random() < 0.5:
            _sc(cfg).apparmor_profile = rng.choice(["", "runtime/default", "unconfined", "localhost/", "localhost/x", "nope"])
            return f"apparmor_profile={_sc(cfg).apparmor_profile!r}"
        _sc(cfg).apparmor = cri.SecurityProfile(profile_type=rng.choice([0, 1, 2, 5]),
                                                localhost_ref=rng.choice(["", "x", "localhost/x", "é"]))
        return f"apparmor {_sc(cfg).apparmor.profile_type} {_sc(cfg).apparmor.localhost_ref!r}"

    def m_masked(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        field_name = rng.choice(["masked_paths", "readonly_paths"])
        setattr(_sc(cfg), field_name, rng.sample(_PATHS, rng.randint(1, 3)))
        return f"{field_name}={getattr(_sc(cfg), field_name)!r:.60}"

    def m_pid_mode(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        ns = _sc(cfg).namespace_options
        ns.pid = rng.choice([0, 1, 2, 3, 7])
        ns.target_id = rng.choice(["", "", "nosuch", "0" * 64])
        ns.ipc, ns.network = rng.choice([0, 1, 2, 9]), rng.choice([0, 1, 2, 9])
        return f"pid={ns.pid} target={ns.target_id!r:.10} ipc={ns.ipc} net={ns.network}"

    def m_selinux(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        _sc(cfg).selinux_options = cri.SeLinuxOption(user=rng.choice(_ODD_TEXT), type=rng.choice(["", "spc_t", "é"]),
                                                     level=rng.choice(["", "s0:c1,c2", "\0"]))
        return "selinux options"

    def m_labels(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        target = rng.choice(["labels", "annotations"])
        setattr(cfg, target, {rng.choice(_ODD_TEXT + ["io.kubernetes.container.name"]): rng.choice(_ODD_TEXT)})
        return f"{target} {getattr(cfg, target)!r:.60}"

    def m_metadata(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        if rng.random() < 0.5:
            cfg.metadata.name = rng.choice(_ODD_TEXT + ["UPPER", "a_b", "a" * 64])
        else:
            cfg.metadata.attempt = rng.choice([1, 2**32 - 1, 7])
        return f"metadata {cfg.metadata.name!r:.30} attempt={cfg.metadata.attempt}"

    def m_image(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        cfg.image = cri.ImageSpec(image=rng.choice(["", "UPPER/Case", "::", "a@sha256:zz", "127.0.0.1:1/fuzz/img:tag", "sha256:" + "0" * 64,
                                                    self.image.rsplit(":", 1)[0] + ":other", self.image + "\0"]))
        return f"image={cfg.image.image!r}"

    def m_image_volume(self, rng: random.Random, cfg: cri.ContainerConfig) -> str:
        cfg.mounts = [cri.Mount(container_path=rng.choice(["/vol", "", "relative", "/"]),
                                image=cri.ImageSpec(image=rng.choice([self.image, "127.0.0.1:1/x:y", ""])),
                                image_sub_path=rng.choice(["", "bin", "../x", "/abs", "nosuch", "bin/busybox"]),
                                propagation=rng.choice([0, 0, 1]))]
        m = cfg.mounts[0]
        return f"image volume {m.image.image!r:.30} sub={m.image_sub_path!r} -> {m.container_path!r}"


@dataclass
class CreateResult:
    statuses: Counter[str] = field(default_factory=Counter)  # "CreateContainer OK", "StartContainer INVALID_ARGUMENT", ...
    offenders: list[str] = field(default_factory=list)  # server-side answers, with the request
    failures: list[str] = field(default_factory=list)  # created containers that did not start, exec, stop or be removed
    examples: dict[str, list[str]] = field(default_factory=dict)  # per status key, the first few refusals
    created: int = 0
    sent: int = 0
    seconds: float = 0.0


async def _call(result: CreateResult, what: str, label: str, coro: Any) -> Any:
    """The answer, or None for a refusal (counted; a server-side one is an offender)."""
    try:
        out = await coro
    except GRPCError as exc:
        key = f"{what} {exc.status.name}"
        result.statuses[key] += 1
        if len(shown := result.examples.setdefault(key, [])) < 40:
            shown.append(f"[{label}] {(exc.message or '')[:200]}")
        if exc.status in SERVER_SIDE:
            result.offenders.append(f"{what} [{label}] {exc.status.name}: {(exc.message or '')[:300]}")
        return None
    result.statuses[f"{what} OK"] += 1
    return out


async def _running(c: CriClient, cid: str) -> bool:
    status = (await c.runtime.container_status(cri.ContainerStatusRequest(container_id=cid))).status
    return status.state == cri.ContainerState.CONTAINER_RUNNING


async def run_create_fuzz(c: CriClient, pod_id: str, pod_config: cri.PodSandboxConfig, fuzzer: CreateFuzzer,
                          count: int, exec_timeout: int = int(10 * FACTOR)) -> CreateResult:
    """`count` requests; each container made goes through start, exec (if it
    runs), stop and remove, and must answer each with a client-side status."""
    result = CreateResult()
    start = time.monotonic()
    for n in range(count):
        label, cfg = fuzzer.request(n)
        result.sent += 1
        req = cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_config)
        created = await _call(result, "CreateContainer", label, c.runtime.create_container(req, timeout=60 * FACTOR))
        if created is None:
            continue
        result.created += 1
        cid = created.container_id
        started = await _call(result, "StartContainer", label, c.runtime.start_container(
            cri.StartContainerRequest(container_id=cid), timeout=60 * FACTOR))
        if started is not None:
            await asyncio.sleep(0.05)
            if await _running(c, cid):
                ran = await _call(result, "ExecSync", label, c.runtime.exec_sync(
                    cri.ExecSyncRequest(container_id=cid, cmd=["/bin/true"], timeout=exec_timeout), timeout=exec_timeout + 30))
                if ran is None and await _running(c, cid):  # not a command that exited meanwhile
                    result.failures.append(f"exec in a running container refused [{label}]")
        stopped = await _call(result, "StopContainer", label, c.runtime.stop_container(
            cri.StopContainerRequest(container_id=cid, timeout=0), timeout=60 * FACTOR))
        removed = await _call(result, "RemoveContainer", label, c.runtime.remove_container(
            cri.RemoveContainerRequest(container_id=cid), timeout=60 * FACTOR))
        if stopped is None or removed is None:
            result.failures.append(f"container {cid} [{label}]: stop {stopped is not None}, remove {removed is not None}")
    result.seconds = time.monotonic() - start
    return result
