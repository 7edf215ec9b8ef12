"""What CreateContainer's steps share: the daemon's services and the container being built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from podrt.config import Config
from podrt.images.manager import ImageView
from podrt.model.container import ContainerConfig
from podrt.oci.runtime import OciRuntime
from podrt.rollback import StepRecord
from podrt.state.idindex import IdIndex
from podrt.state.names import NameRegistry
from podrt.state.records import SandboxState
from podrt.steps.context import DaemonPaths, LayerIdmap, RootfsSource


@attrs.define
class ContainerDeps(DaemonPaths):
    """Daemon-level services; steps are built with these, so undo works after a restart."""

    config: Config
    names: NameRegistry  # shared with the pods: one namespace of names, as in CRI-O
    ids: IdIndex  # containers' own
    runtimes: dict[str, OciRuntime]
    # the container's OCI spec (container.spec.build_container_spec): the container rules are the
    # manager's, handed down to the ContainerSpec step; runs in a thread (reads the image's /etc/passwd)
    build_spec: Callable[[ContainerContext, Config], dict[str, Any]]

    @property
    def exit_dir(self) -> Path:
        """conmon's exit files of all containers, in one dir: one listing tells which exited."""
        return self.runroot / "exits"

    def run_dir(self, container_id: str) -> Path:
        return self.container_run_dir(container_id)


@attrs.frozen
class VolumeSource:
    """An image volume: the image mounted at config.mounts[index]."""

    index: int
    image_id: str
    image_name: str
    lowers: tuple[str, ...]  # its layer links, top first


@attrs.define
class ContainerContext:
    """The container under construction; each step reads what earlier ones decided."""

    id: str
    config: ContainerConfig
    sandbox: SandboxState
    name: str
    image: ImageView
    image_ref: str  # the image as the request named it
    lowers: tuple[str, ...]  # the image's layer links, top first
    created_at: int
    log_path: str
    stop_signal: str
    rootfs: str = ""
    # pid of the container config.pid_target_id names (pid_mode TARGET), filled by the
    # manager before the spec is built: the new container joins its PID namespace
    target_pid: int = 0
    volumes: tuple[VolumeSource, ...] = ()
    # mount index -> what the spec binds: an image's overlay (ImageVolumes), a host path's ID-mapped clone (IdmapBinds)
    volume_paths: dict[int, str] = attrs.field(factory=dict)
    spec: dict[str, Any] = attrs.field(factory=dict)
    pid: int = 0
    conmon_pid: int = 0
    completed: list[StepRecord] = attrs.field(factory=list)
    state: Any = None

    @property
    def reserved_names(self) -> list[str]:
        return [self.name]

    @property
    def runtime_handler(self) -> str:
        return self.sandbox.runtime_handler

    def layer_idmap(self, deps: ContainerDeps, name: str) -> LayerIdmap | None:
        """How its layers (its root's, image volume `name`'s) are ID-mapped, in a pod with a user namespace."""
        pod = self.sandbox
        return LayerIdmap(pod.userns_path, deps.idmap_dir(self.id) / name, pod.config.userns.root) if pod.userns_path else None

    def rootfs_source(self, deps: ContainerDeps) -> RootfsSource:
        return RootfsSource(self.image.record.id, self.image_ref, None, self.lowers, deps.container_dir(self.id) / "rootfs",
                            self.layer_idmap(deps, "rootfs"))
