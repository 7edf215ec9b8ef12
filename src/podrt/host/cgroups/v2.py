"""The cgroup v2 reader (cgroupspy knows only v1).

Every file is one of the kernel's documented formats (Documentation/admin-guide/
cgroup-v2.rst): a single value ("max" for none), flat keyed ("key value" lines),
nested keyed ("8:0 rbytes=1 wbytes=2" lines) or pressure ("some avg10=..."). A
file that cannot be read or parsed counts as absent: its controller is not
enabled for this cgroup, or the kernel has the file but not the feature (PSI
files answer EOPNOTSUPP on a kernel booted with psi=0), and its counters read 0.
Only cpu.stat, which every non-root cgroup has, must be there: without it, or
once the directory is gone after the read, the cgroup reads as None.
"""

from __future__ import annotations

from pathlib import Path

from podrt.host.cgroups.usage import DeviceIo, Pressure, PressureLine, Usage, io_totals


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # absent (ENOENT), removed meanwhile (ENODEV), or not offered (EOPNOTSUPP)
        return None


def single(text: str | None) -> int | None:
    """A one-value file; "max" (no limit), an absent or unreadable file are None."""
    words = (text or "").split()
    return int(words[0]) if words and words[0].isdigit() else None


def flat_keyed(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def nested_keyed(text: str | None) -> dict[str, dict[str, str]]:
    """`io.stat`-style lines: the first word names the entry, the rest are key=value."""
    out = {}
    for line in (text or "").splitlines():
        if words := line.split():
            out[words[0]] = dict(p.split("=", 1) for p in words[1:] if "=" in p)
    return out


def pressure(text: str | None) -> Pressure | None:
    lines = {}
    try:
        for name, fields in nested_keyed(text).items():
            lines[name] = PressureLine(avg10=float(fields.get("avg10", 0)), avg60=float(fields.get("avg60", 0)),
                                       avg300=float(fields.get("avg300", 0)), total_us=int(fields.get("total", 0)))
    except ValueError:
        return None
    if "some" not in lines:
        return None
    return Pressure(some=lines["some"], full=lines.get("full", PressureLine()))


def io_devices(text: str | None) -> tuple[DeviceIo, ...]:
    """io.stat's lines ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 ..."), one per device."""
    def count(fields: dict[str, str], key: str) -> int:
        value = fields.get(key, "0")
        return int(value) if value.isdigit() else 0

    out = []
    for device, fields in nested_keyed(text).items():
        major, _, minor = device.partition(":")
        if major.isdigit() and minor.isdigit():
            out.append(DeviceIo(int(major), int(minor), count(fields, "rbytes"), count(fields, "wbytes"),
                                count(fields, "rios"), count(fields, "wios")))
    return tuple(out)


def _hugetlb(d: Path) -> tuple[tuple[str, int], ...]:
    """hugetlb.<size>.current, per page size (not the reservations' hugetlb.<size>.rsvd.current)."""
    return tuple((f.name.split(".")[1], single(_text(f)) or 0) for f in sorted(d.glob("hugetlb.*.current"))
                 if f.name.count(".") == 2)


def read(path: str, root: Path) -> Usage | None:
    d = root / path.lstrip("/")
    cpu = _text(d / "cpu.stat")  # in every non-root cgroup, whatever is enabled
    if cpu is None:
        return None
    c = flat_keyed(cpu)
    mem = flat_keyed(_text(d / "memory.stat"))
    events = flat_keyed(_text(d / "memory.events"))
    current = single(_text(d / "memory.current")) or 0
    swap_max = _text(d / "memory.swap.max")
    devices = io_devices(_text(d / "io.stat"))
    io = io_totals(devices)
    usage = Usage(
        cpu_ns=c.get("usage_usec", 0) * 1000,
        cpu_user_ns=c.get("user_usec", 0) * 1000,
        cpu_system_ns=c.get("system_usec", 0) * 1000,
        cpu_periods=c.get("nr_periods", 0),
        cpu_throttled_periods=c.get("nr_throttled", 0),
        cpu_throttled_ns=c.get("throttled_usec", 0) * 1000,
        memory_bytes=current,
        memory_max_bytes=single(_text(d / "memory.peak")) or 0,
        working_set_bytes=max(0, current - mem.get("inactive_file", 0)),
        rss_bytes=mem.get("anon", 0),
        cache_bytes=mem.get("file", 0),
        mapped_file_bytes=mem.get("file_mapped", 0),
        page_faults=mem.get("pgfault", 0),
        major_page_faults=mem.get("pgmajfault", 0),
        limit_bytes=single(_text(d / "memory.max")),
        limit_hits=events.get("max", 0),
        oom_events=events.get("oom", 0),
        oom_kills=events.get("oom_kill", 0),
        swap_bytes=(single(_text(d / "memory.swap.current")) or 0) if swap_max is not None else None,
        swap_limit_bytes=single(swap_max),
        processes=single(_text(d / "pids.current")) or 0,
        processes_limit=single(_text(d / "pids.max")),
        io_read_bytes=io[0], io_write_bytes=io[1], io_reads=io[2], io_writes=io[3], io_devices=devices,
        hugetlb_bytes=_hugetlb(d),
        cpu_pressure=pressure(_text(d / "cpu.pressure")),
        memory_pressure=pressure(_text(d / "memory.pressure")),
        io_pressure=pressure(_text(d / "io.pressure")),
    )
    return usage if d.is_dir() else None  # removed while read: its zeros are not a reading


def oom_kills(path: str, root: Path) -> int:
    return flat_keyed(_text(root / path.lstrip("/") / "memory.events")).get("oom_kill", 0)
