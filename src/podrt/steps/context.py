"""What every step's context shares, pods' and containers' alike: where the daemon keeps
things (DaemonPaths, the base of both deps), what the Rootfs step mounts, and what the
shared phases need of a context and its deps (protocols both pods' and containers' meet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs

from podrt.config import Config
from podrt.state.idindex import IdIndex
from podrt.state.names import NameRegistry

D = TypeVar("D", contravariant=True)


@attrs.frozen
class LayerIdmap:
    """How a root (or an image volume) is made for a pod with a user namespace:
    each layer ID-mapped into it, mounted in `scratch` only while the overlay is
    made, and the writable upper owned by the pod's root as the host sees it."""

    userns: str  # the pod's pinned user namespace
    scratch: Path  # the layers' ID-mapped mounts, gone once the overlay holds them
    owner: tuple[int, int]  # host uid and gid of the pod's root (container ID 0)


@attrs.frozen
class RootfsSource:
    """What the Rootfs step mounts: an image's layers, or a shared read-only layer as it is."""

    image_id: str
    image_name: str
    shared: Path | None  # used as it is (the builtin pause image), no overlay
    lowers: tuple[str, ...]  # layer links, top first, relative to the images dir
    dir: Path  # upper/, work/ and merged/ go here
    idmap: LayerIdmap | None = None  # a pod with a user namespace: its layers ID-mapped


class DaemonPaths:
    """Where the daemon keeps things, from its config (pods' and containers' deps share it)."""

    config: Config  # a field of each attrs subclass

    @property
    def root(self) -> Path:
        return Path(self.config.root)

    @property
    def runroot(self) -> Path:
        return Path(self.config.runroot)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    def idmap_dir(self, owner_id: str) -> Path:
        """A pod's or container's ID-mapped mounts (host/idmap.py), apart from its
        dirs: nothing removes a tree there, only mount points once unmounted."""
        return self.runroot / "idmap" / owner_id

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    def container_dir(self, container_id: str) -> Path:
        """A container's state dir: its record, its spec's copy, its overlay's upper and work dirs."""
        return self.containers_dir / container_id

    @property
    def container_runs_dir(self) -> Path:
        return self.runroot / "containers"

    def container_run_dir(self, container_id: str) -> Path:
        """A container's bundle (runc's config.json), conmon's files, its exec specs."""
        return self.container_runs_dir / container_id


class Named(Protocol):
    """A context whose object takes names (ReserveNames) and an ID (IndexId)."""

    @property
    def id(self) -> str: ...
    @property
    def reserved_names(self) -> list[str]: ...


class Registries(Protocol):
    """Deps holding the names and IDs taken (pods and containers share the names)."""

    @property
    def names(self) -> NameRegistry: ...
    @property
    def ids(self) -> IdIndex: ...


class Mounted(Protocol[D]):
    """A context with a root to mount (Rootfs), whose source it tells given its deps D."""

    rootfs: str

    def rootfs_source(self, deps: D) -> RootfsSource: ...


class Specified(Protocol):
    """A context that gets an OCI spec (WriteSpec)."""

    spec: dict[str, Any]
