"""One import: the archive it reads, what it has put into the store so far,
the name to give, and the checks both formats make of what they read."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from podrt.images.archive.source import Problem, Source
from podrt.images.archive.staging import Staging
from podrt.images.blobs import parse_digest
from podrt.images.pull import host_platform
from podrt.oci import reference

log = logging.getLogger(__name__)


@attrs.frozen
class Job:
    source: Source
    staging: Staging
    label: str  # the archive, as error messages name it
    name: reference.Reference | None = None  # `--name`: names the archive's only image

    def one_image(self, kind: str, images: int) -> None:
        """With a name to give, the archive must hold one image: which of several would it name?"""
        if self.name is not None and images > 1:
            raise Problem(f"the {kind} holds {images} images, and a name (--name {self.name}) names one: "
                          "import it without a name")

    def check_platform(self, config: Any, what: str) -> None:
        """An image for another platform is imported, with a warning (a pull would have chosen)."""
        os_, arch, _variant = host_platform()
        if isinstance(config, dict) and (config.get("os"), config.get("architecture")) != (os_, arch):
            log.warning("%s: image %s is for %s/%s, this host is %s/%s", self.label, what,
                        config.get("os"), config.get("architecture"), os_, arch)


def diff_ids(config: Any, layers: int, what: str) -> list[str]:
    """The image config's rootfs.diff_ids, one per layer."""
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or not all(isinstance(d, str) for d in ids):
        raise Problem(f"config {what} has no rootfs.diff_ids")
    if len(ids) != layers:
        raise Problem(f"{layers} layers but {len(ids)} diff IDs in the config {what}")
    for d in ids:
        try:
            parse_digest(d)
        except ValueError as exc:
            raise Problem(f"config {what}: {exc}") from None
    return ids
