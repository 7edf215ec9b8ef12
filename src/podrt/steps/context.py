"""What every step's context shares, pods' and containers' alike: where the daemon keeps
things (DaemonPaths, the base of both deps) and what the Rootfs step mounts."""

from __future__ import annotations

from pathlib import Path

import attrs

from podrt.config import Config


@attrs.frozen
class RootfsSource:
    """What the Rootfs step mounts: an image's layers, or a shared read-only layer as it is."""

    image_id: str
    image_name: str
    shared: Path | None  # used as it is (the builtin pause image), no overlay
    lowers: tuple[str, ...]  # layer links, top first, relative to the images dir
    dir: Path  # upper/, work/ and merged/ go here


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

    def container_run_dir(self, container_id: str) -> Path:
        """A container's bundle (runc's config.json), conmon's files, its exec specs."""
        return self.runroot / "containers" / container_id
