"""Seccomp profiles in the OCI `linux.seccomp` form runc takes.

RuntimeDefault is podrt's builtin copy of the Docker/containerd default
profile, flattened to OCI form for an unprivileged container with CRI-O's
default capabilities: the rules the Docker profile makes conditional on
capabilities a pod does not have (CAP_SYS_ADMIN: mount, unshare, setns, ...)
are simply absent. Localhost profiles may be written in OCI or Docker form;
Docker's conditional rules are resolved here the same way.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import platform
import stat
from typing import Any

from podrt.oci.spec import DEFAULT_CAPABILITIES

ARCHITECTURES: tuple[str, ...] = (
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
)

EPERM = 1
ENOSYS = 38
AF_VSOCK = 40
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: clone() may not
# create namespaces without CAP_SYS_ADMIN.
CLONE_NAMESPACE_FLAGS = 2114060288
# PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26, and the query value.
PERSONALITY_VALUES: tuple[int, ...] = (0, 8, 131072, 131080, 4294967295)

# The main allow list of the Docker/containerd default profile (moby
# profiles/seccomp/default.json), minus io_uring_*, which both projects
# have since dropped from their defaults.
ALLOWED_SYSCALLS: tuple[str, ...] = (
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset",
    "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown",
    "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
    "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_time64", "futex_waitv",
    "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
    "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
    "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
    "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
    "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat",
    "lstat64", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
    "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv",
    "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep",
    "newfstatat", "_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
    "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2",
    "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
    "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat",
    "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
    "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
    "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64",
    "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
    "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid",
    "waitpid", "write", "writev",
)  # fmt: skip

# Docker allows these only on the architectures that have them; in OCI form a
# name a filter's architecture lacks is simply not added for it. arch_prctl is
# needed by every x86_64 process (TLS set-up).
ARCH_SYSCALLS: tuple[str, ...] = (
    "arch_prctl",
    "modify_ldt",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
)

# Docker's conditional rules use its own architecture names.
_DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
_OCI_SYSCALL_KEYS = ("names", "action", "errnoRet", "args")
MAX_PROFILE = 1 << 20  # bytes; Docker's default profile is about 20 KB
_OCI_PROFILE_KEYS = ("defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath", "listenerMetadata")


class ProfileType(str, enum.Enum):
    """Which seccomp profile a pod or container asks for (CRI's SecurityProfile kinds)."""

    RUNTIME_DEFAULT = "runtime/default"
    UNCONFINED = "unconfined"
    LOCALHOST = "localhost"


def default_profile() -> dict[str, Any]:
    """podrt's RuntimeDefault profile (a fresh dict each call: callers may
    put it in a spec and mutate that)."""
    allow = "SCMP_ACT_ALLOW"
    syscalls: list[dict[str, Any]] = [
        {"names": list(ALLOWED_SYSCALLS), "action": allow},
        {"names": list(ARCH_SYSCALLS), "action": allow},
        # Any socket family but vsock, which reaches the host/hypervisor.
        {"names": ["socket"], "action": allow, "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]},
        # Threads and processes, but no new namespaces.
        {
            "names": ["clone"],
            "action": allow,
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        # clone3's flags are behind a pointer seccomp cannot inspect: ENOSYS
        # (not EPERM) makes glibc fall back to the filtered clone.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    syscalls += [
        {"names": ["personality"], "action": allow, "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
        for v in PERSONALITY_VALUES
    ]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": syscalls,
    }


def load_localhost_profile(path: str) -> dict[str, Any]:
    """Read a profile from the node, in OCI or Docker form, as OCI form.

    Raises ValueError (one line, naming the path) when the file is missing or
    unreadable, is not JSON, or is not a profile.
    """
    try:
        raw = json.loads(_read_profile(path))
    except OSError as e:
        raise ValueError(f"seccomp profile {path}: cannot read: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"seccomp profile {path}: not valid JSON: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("defaultAction"), str):
        raise ValueError(f"seccomp profile {path}: no defaultAction")
    syscalls = raw.get("syscalls") or []
    if not isinstance(syscalls, list) or not all(isinstance(r, dict) for r in syscalls):
        raise ValueError(f"seccomp profile {path}: syscalls must be a list of objects")

    profile = {k: raw[k] for k in _OCI_PROFILE_KEYS if k in raw}
    try:  # Docker's extensions are walked as JSON came: any other shape is the file's fault
        if "archMap" in raw and "architectures" not in profile:
            profile["architectures"] = _architectures(raw["archMap"] or [])
        profile["syscalls"] = [_oci_rule(r) for r in syscalls if _docker_rule_applies(r)]
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"seccomp profile {path}: malformed archMap, includes or excludes: {e}") from e
    return profile


def _read_profile(path: str) -> bytes:
    """A regular file of at most MAX_PROFILE bytes: opened without blocking,
    so a FIFO or a device named as a profile cannot stall the daemon."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # never opened: opening some devices acts (a watchdog arms)
        raise OSError(errno.EINVAL, "not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)  # again: it may have been swapped since
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_PROFILE:
            raise OSError(errno.EFBIG, f"larger than {MAX_PROFILE} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_PROFILE + 1)
    finally:
        os.close(fd)


def profile_for(
    profile_type: ProfileType, localhost_ref: str, *, privileged: bool, enabled: bool, default_path: str = ""
) -> dict[str, Any] | None:
    """The linux.seccomp object for a pod's or a container's process, None for none.
    RuntimeDefault is the builtin profile, or the file `default_path` names
    (podrt.runtime.seccomp_profile, like CRI-O's seccomp_profile).

    Raises ValueError for a Localhost reference that is not an absolute path
    or does not load.
    """
    if privileged or not enabled or profile_type == ProfileType.UNCONFINED:
        return None
    if profile_type == ProfileType.RUNTIME_DEFAULT:
        return load_localhost_profile(default_path) if default_path else default_profile()
    if profile_type == ProfileType.LOCALHOST:
        if not os.path.isabs(localhost_ref):
            raise ValueError(f"seccomp localhost profile must be an absolute path, got {localhost_ref!r}")
        return load_localhost_profile(localhost_ref)
    raise ValueError(f"unknown seccomp profile type {profile_type!r}")


def _architectures(arch_map: list[dict[str, Any]]) -> list[str]:
    """Docker's archMap, flattened: every architecture and sub-architecture,
    in order, once (libseccomp adds them all; only the native ones match)."""
    out: list[str] = []
    for entry in arch_map:
        for arch in [entry.get("architecture"), *(entry.get("subArchitectures") or [])]:
            if arch and arch not in out:
                out.append(arch)
    return out


def _oci_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """Docker's old singular `name` becomes `names`; Docker-only keys go."""
    out = {k: rule[k] for k in _OCI_SYSCALL_KEYS if k in rule}
    if "names" not in out and rule.get("name"):
        out["names"] = [rule["name"]]
    return out


def _docker_rule_applies(rule: dict[str, Any]) -> bool:
    """Docker's includes/excludes, judged for an unprivileged pod (CRI-O's
    default capabilities) on this host; OCI-form rules have neither."""
    caps = set(DEFAULT_CAPABILITIES)
    arch = _DOCKER_ARCH.get(platform.machine(), platform.machine())
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("minKernel") and _kernel() < _version(inc["minKernel"]):
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    if exc.get("arches") and arch in exc["arches"]:
        return False
    return True


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("-")[0].split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _kernel() -> tuple[int, ...]:
    return _version(os.uname().release)
