"""Image volumes (CRI Mount.image, Kubernetes' ImageVolume): each image is
mounted as an overlay of its layers under the container's dir, and the spec
binds it (read-only, as the kubelet asks) at the mount's container path. An
overlay of its own per container, with an upper that nothing writes, as the
rootfs is made: no single-layer special case, and removal is the same unmount.
The record names the images, so none is removed while a container mounts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.steps.base import ContainerStep
from podrt.steps.container.context import ContainerContext
from podrt.steps.rootfs import mount_layers, release_layers


class ImageVolumes(ContainerStep):
    kind = "ctr-volumes"
    blocking = True  # mounts: in the creation's trip to a worker thread

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        base = self.deps.container_dir(ctx.id) / "volumes"
        ids = [ctx.layer_idmap(self.deps, f"volume-{v.index}") for v in ctx.volumes]
        return {"images": [v.image_id for v in ctx.volumes], "dirs": [str(base / str(v.index)) for v in ctx.volumes],
                "scratch": [str(i.scratch) for i in ids if i is not None]}

    def do_blocking(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        try:
            for volume, where in zip(ctx.volumes, data["dirs"]):
                ids = ctx.layer_idmap(self.deps, f"volume-{volume.index}")
                mount_layers(self.deps.images_dir, volume.image_name, volume.lowers, Path(where), ids)
                ctx.volume_paths[volume.index] = str(Path(where) / "merged")
        except BaseException:
            release_layers(data.get("scratch", ()), data["dirs"])
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        await finish_in_thread(release_layers, data.get("scratch", ()), data["dirs"])
