"""CheckpointContainer: the kubelet's forensic checkpoint, in the archive
CRI-O writes and checkpointctl reads.

As CRI-O does it: the container is paused (cgroup freezer) so its memory and
its files are taken at one instant; `runc checkpoint --leave-running` has CRIU
dump its processes; the files it changed are read from its overlay's upper
dir; it is resumed; then the archive is written. The archive is an
uncompressed tar, mode 0600 (it holds every page of the processes' memory):

    checkpoint/       CRIU's images (inventory.img, pages-*.img, ...)
    dump.log          CRIU's log (and stats-dump, where CRIU writes one)
    config.dump       id, name, image, runtime, created and checkpointed times
    spec.dump         the container's OCI spec, with the io.kubernetes.cri.*
                      annotations checkpointctl names a non-CRI-O container by
    bind.mounts       its bind mounts' sources and types (CRI-O reads it at restore)
    rootfs-diff.tar   the files it added or changed (when there are any)
    deleted.files     the paths it deleted, as JSON (when there are any)

Everything is built in a temporary dir beside the container's other files
(the images can be as large as its memory, so not on a tmpfs), then written
next to `location` under a hidden name and renamed over it: a failure, a
timeout or a cancelled call leaves neither a partial archive nor the temporary
files. An existing file at `location` is replaced, as CRI-O overwrites it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from podrt.aio import await_shielded
from podrt.container.status import ContainerStatuses
from podrt.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from podrt.host import overlay
from podrt.model.container import ContainerStatus
from podrt.oci.criu import CriuSupport
from podrt.oci.runtime import OciRuntimeError, RuntimeRefused
from podrt.sandbox.manager import SandboxManager
from podrt.state.records import ContainerState
from podrt.state.store import StateStore
from podrt.steps.base import runtime_for
from podrt.steps.container.context import ContainerDeps

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = 240.0  # timeout 0; the kubelet's own deadline is twice its runtime request timeout (2 x 2 min)
# mounted by the runtime whatever the request: not the container's files (CRI-O's list, from Podman)
RUNTIME_MOUNTS = ("/dev", "/dev/shm", "/proc", "/run", "/run/.containerenv", "/run/secrets", "/sys")
CHUNK = 1 << 20
LOG_ERRORS = 3  # the last Error lines of CRIU's dump.log in a refusal


class Stopped(Exception):
    """The archive's writer was told to stop: the call timed out or was cancelled."""


def checked_location(location: str) -> Path:
    """Where the archive goes: an absolute path to a file in an existing dir."""
    if not location:
        raise InvalidArgument("location: empty; the path of the checkpoint archive to write is required")
    if "\x00" in location or not os.path.isabs(location):
        raise InvalidArgument(f"location: {location!r} is not an absolute path")
    target = Path(os.path.normpath(location))
    if target.is_dir():
        raise InvalidArgument(f"location: {location} is a directory; it must name the archive file")
    if not target.parent.is_dir():
        raise FailedPrecondition(f"location: directory {target.parent} does not exist")
    return target


class ContainerCheckpoints:
    def __init__(self, deps: ContainerDeps, table: StateStore[ContainerState], statuses: ContainerStatuses,
                 sandboxes: SandboxManager) -> None:
        self.deps, self._table, self._statuses, self._sandboxes = deps, table, statuses, sandboxes
        self.criu = CriuSupport()

    def _running(self, container_id: str) -> ContainerState:
        state = self._table.get(container_id)
        status = self._statuses.status(state)
        if status != ContainerStatus.RUNNING:
            raise FailedPrecondition(f"container {container_id} is {status.value}, not running: it cannot be checkpointed")
        return state

    async def checkpoint(self, id_prefix: str, location: str, timeout: float) -> None:
        """Checkpoint the container into an archive at `location`; it keeps running.
        `timeout` seconds (0: DEFAULT_TIMEOUT) bound the whole call."""
        target = checked_location(location)
        container_id = self._table.resolve(id_prefix)
        self._running(container_id)
        if problem := await self.criu.problem():
            raise FailedPrecondition(f"checkpointing needs CRIU, which cannot work on this host: {problem}")
        budget = timeout if timeout > 0 else DEFAULT_TIMEOUT
        async with self._table.lock(container_id):
            state = self._running(container_id)  # it may have exited while we waited
            work = Path(tempfile.mkdtemp(prefix="checkpoint-", dir=self.deps.container_dir(container_id)))
            try:
                async with asyncio.timeout(budget):
                    took = await self._dump(state, work, target, budget)
            except TimeoutError:
                raise DeadlineExceeded(f"checkpoint of container {container_id} did not finish in its {budget:g}s; "
                                       f"nothing was written to {target}") from None
            finally:
                if await await_shielded(asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, work, True))):
                    raise asyncio.CancelledError
        log.info("checkpointed container %s into %s in %s", container_id, target, took)

    async def recover(self, states: list[ContainerState]) -> None:
        """At start, after a daemon that died amid a checkpoint: the container
        it paused is resumed (podrt pauses nothing else), its temporary dir goes.
        A partial archive stays at its hidden name: where was not recorded."""
        for state in states:
            left = list(self.deps.container_dir(state.id).glob("checkpoint-*"))
            if not left or state.id not in self._table:
                continue
            log.warning("container %s: a checkpoint was cut short by the daemon's end; resuming it", state.id)
            try:
                await runtime_for(self.deps.runtimes, state.runtime_handler).pause(state.id, resume=True)
            except (OciRuntimeError, FailedPrecondition) as exc:  # not paused (it was resumed already), or gone
                log.info("container %s: %s", state.id, exc)
            for work in left:
                await asyncio.to_thread(shutil.rmtree, work, True)

    async def _dump(self, state: ContainerState, work: Path, target: Path, budget: float) -> str:
        """The checkpoint; what its phases took, for the log."""
        runtime = runtime_for(self.deps.runtimes, state.runtime_handler)
        start = time.monotonic()
        spec = await _in_thread(self._write_metadata, state, self._pod_names(state), work)
        paused = 0.0
        frozen = True  # perhaps: a timeout amid `runc pause` must not leave it frozen
        try:
            try:
                await runtime.pause(state.id)
            except OciRuntimeError as exc:  # it exited meanwhile
                frozen = False
                raise FailedPrecondition(f"container {state.id} cannot be paused for its checkpoint: {exc}") from None
            paused = time.monotonic()
            try:  # the runtime's own limit is a backstop: the caller's timeout ends it first
                await runtime.checkpoint(state.id, image_path=work / "checkpoint", work_path=work, timeout=budget + 5)
            except RuntimeRefused as exc:
                raise FailedPrecondition(f"{exc}{_dump_errors(work / 'dump.log')}") from None
            dumped = time.monotonic()
            await _in_thread(_rootfs_diff, work, _upper_dir(state), spec)
        finally:  # however the dump ended: a frozen container would stop serving
            if frozen and await await_shielded(asyncio.ensure_future(runtime.pause(state.id, resume=True))):
                raise asyncio.CancelledError
        resumed = time.monotonic()
        await _in_thread(_write_archive, work, target)
        return (f"{(time.monotonic() - start) * 1000:.0f} ms: frozen {(resumed - paused) * 1000:.0f} ms, "
                f"CRIU {(dumped - paused) * 1000:.0f} ms; archive {target.stat().st_size} bytes")

    def _pod_names(self, state: ContainerState) -> dict[str, str]:
        """What checkpointctl shows a non-CRI-O container's pod by (containerd's annotations)."""
        try:
            pod = self._sandboxes.view(state.sandbox_id).state.config
        except NotFound:
            return {}
        return {"io.kubernetes.cri.sandbox-name": pod.name, "io.kubernetes.cri.sandbox-namespace": pod.namespace}

    def _write_metadata(self, state: ContainerState, pod_names: dict[str, str], work: Path,
                        stop: threading.Event) -> dict[str, Any]:
        """config.dump, spec.dump and bind.mounts; the spec, for the rootfs diff."""
        spec = json.loads((self.deps.run_dir(state.id) / "config.json").read_bytes())
        annotations = {**spec.get("annotations", {}), **pod_names, "io.kubernetes.cri.container-type": "container",
                       "io.kubernetes.cri.container-name": state.config.name,
                       "io.kubernetes.cri.sandbox-id": state.sandbox_id, "io.kubernetes.cri.image-name": state.image_ref}
        _write_json(work / "spec.dump", {**spec, "annotations": annotations})
        _write_json(work / "config.dump", {
            "id": state.id, "name": state.config.name, "rootfsImage": state.image_ref,
            "rootfsImageRef": state.image_id, "rootfsImageName": state.image_ref, "runtime": state.runtime_handler,
            "createdTime": _go_time(state.created_at), "checkpointedTime": _go_time(time.time_ns()),
            "restoredTime": _go_time(0), "restored": False})
        if binds := _bind_mounts(spec):
            _write_json(work / "bind.mounts", binds)
        return spec


def _go_time(ns: int) -> str:
    """A time as Go's encoding/json writes a time.Time (RFC 3339, UTC); 0 is Go's zero time."""
    if ns <= 0:
        return "0001-01-01T00:00:00Z"
    at = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def _write_json(path: Path, value: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)


def _is_bind(mount: dict[str, Any]) -> bool:
    return mount.get("type") == "bind" or bool({"bind", "rbind"} & set(mount.get("options") or ()))


def _bind_mounts(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """CRI-O's bind.mounts: what each bind mount's source is (restore must make a file or a dir)."""
    binds = []
    for m in spec.get("mounts") or ():
        if not _is_bind(m) or m.get("destination") in RUNTIME_MOUNTS:
            continue
        try:
            st = os.stat(m["source"])
        except (OSError, KeyError):
            continue  # gone since the container started: restore has nothing to make
        binds.append({"source": m["source"], "destination": m["destination"],
                      "file_type": "directory" if os.path.isdir(m["source"]) else "file",
                      "permissions": st.st_mode & 0o7777})
    return binds


def _upper_dir(state: ContainerState) -> Path | None:
    """The writable layer of its root, from its rootfs step's record (None: a root it does not own)."""
    for step in state.steps:
        if step.kind == "rootfs" and step.data.get("dir"):
            return Path(step.data["dir"]) / "upper"
    return None


def _rootfs_diff(work: Path, upper: Path | None, spec: dict[str, Any], stop: threading.Event) -> None:
    """rootfs-diff.tar and deleted.files. Mount points are left out: what the
    runtime made there is not the container's, and a mount's contents are not in the upper dir."""
    if upper is None or not upper.is_dir():
        return
    hidden = [*RUNTIME_MOUNTS, *(str(m.get("destination", "")) for m in spec.get("mounts") or ())]
    changed, deleted = overlay.upper_changes(upper, hidden)
    if changed:
        with tarfile.open(work / "rootfs-diff.tar", "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in changed:
                _add(tar, upper / rel, rel, stop)
    if deleted:
        _write_json(work / "deleted.files", deleted)


def _add(tar: tarfile.TarFile, path: Path, name: str, stop: threading.Event) -> None:
    """One entry, not its children; a regular file is read in chunks, each one
    after a look at `stop` (a memory image can take long to copy)."""
    if stop.is_set():
        raise Stopped
    info = tar.gettarinfo(str(path), arcname=name)
    if not info.isreg():
        tar.addfile(info)
        return
    with open(path, "rb") as f:
        tar.addfile(info, _Watched(f, stop))


class _Watched:
    def __init__(self, f: IO[bytes], stop: threading.Event) -> None:
        self._f, self._stop = f, stop

    def read(self, size: int = CHUNK) -> bytes:
        if self._stop.is_set():
            raise Stopped
        return self._f.read(min(size, CHUNK) if size > 0 else CHUNK)


def _write_archive(work: Path, target: Path, stop: threading.Event) -> None:
    """The work dir's contents as a tar at `target`, whole or not at all."""
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for dirpath, dirnames, filenames in os.walk(work):
                    dirnames.sort()
                    for name in (*dirnames, *sorted(filenames)):
                        path = Path(dirpath) / name
                        _add(tar, path, str(path.relative_to(work)), stop)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _dump_errors(dump_log: Path) -> str:
    """The last Error lines of CRIU's log, which say what it could not dump."""
    try:
        lines = dump_log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if "Error (" in line][-LOG_ERRORS:]
    return f"; criu: {'; '.join(errors)}" if errors else ""


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Blocking file work in a thread, told to stop when the call is cancelled
    (its timeout included); the call returns only once the thread has."""
    stop = threading.Event()
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args, stop))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        stop.set()
        while not fut.done():  # a second cancel does not end the wait
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({fut})
        if not fut.cancelled():
            fut.exception()  # Stopped, as expected, or what else ended it: the cancel wins
        raise
