"""ImageService: CRI messages <-> the image manager. No business logic here.

ListImages and StreamImages (KEP-5825) answer the same images from one list
cache: in one message, or in messages of at most `chunk_size` bytes
(cri/liststreams.py says how the kubelet reads them)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from podrt.api.runtime import v1 as cri
from podrt.cri.listcache import ListCache, chunked, whole
from podrt.cri.stats_convert import fs_usage
from podrt.errors import InvalidArgument
from podrt.images.manager import ImageManager, ImageView
from podrt.images.registry import Credentials
from podrt.images.store import ImageRecord
from podrt.model.container import numeric_id


def credentials(auth: cri.AuthConfig | None) -> Credentials | None:
    """PullImage's AuthConfig in its four forms (`auth` is docker's base64
    user:password); None without one (the global auth file applies)."""
    if auth is None:
        return None
    # a username beside `auth` wins here, as in containerd's ParseAuth
    creds = Credentials.from_docker("" if auth.username else auth.auth, auth.username, auth.password,
                                    auth.identity_token, auth.registry_token)
    if ":" in creds.username:
        raise InvalidArgument("auth.username must not contain ':' (Basic auth sends user:password)")
    for field, value in (("username", creds.username), ("identity_token", creds.identity_token),
                         ("registry_token", creds.registry_token)):
        if any(ord(c) < 32 or ord(c) == 127 for c in value):  # they go into an HTTP header
            raise InvalidArgument(f"auth.{field} must not contain control characters")
    return creds


def _user(view: ImageView) -> tuple[cri.Int64Value | None, str]:
    """The config's User as CRI reports it: a numeric user as uid, a name as username."""
    user = view.user.split(":", 1)[0]
    uid = numeric_id(user)
    return (cri.Int64Value(uid), "") if uid is not None else (None, user)


def image_message(view: ImageView) -> cri.Image:
    r = view.record
    uid, username = _user(view)
    msg = cri.Image(id=r.id, repo_tags=list(r.repo_tags), repo_digests=list(r.repo_digests), size=r.size,
                    username=username, spec=cri.ImageSpec(image=r.id), pinned=r.pinned)
    if uid is not None:
        msg.uid = uid
    return msg


class ImageService(cri.ImageServiceBase):
    def __init__(self, images: ImageManager, writable: Callable[[], Awaitable[tuple[Path, int, int]]],
                 chunk_size: int) -> None:
        """`writable`: where the writable layers live, and their (bytes, inodes)."""
        self._images, self._writable, self._chunk_size = images, writable, chunk_size
        # a record is immutable (a changed one is a new object): it keys its own encoding
        self._list_cache: ListCache[ImageRecord] = ListCache(lambda r: image_message(images.view(r)), key=lambda r: r)

    async def pull_image(self, pull_image_request: cri.PullImageRequest) -> cri.PullImageResponse:
        req = pull_image_request
        record = await self._images.pull(req.image.image, credentials(req.auth if req.is_set("auth") else None))
        return cri.PullImageResponse(image_ref=record.id)

    async def _entries(self, f: cri.ImageFilter | None) -> list[bytes]:
        text = f.image.image if f is not None and f.image is not None else ""
        return self._list_cache.entries(await self._images.list(text), full=not text)

    async def list_images(self, list_images_request: cri.ListImagesRequest) -> cri.ListImagesResponse:
        return whole(cri.ListImagesResponse, await self._entries(list_images_request.filter))

    async def stream_images(self, stream_images_request: cri.StreamImagesRequest) -> AsyncIterator[cri.StreamImagesResponse]:
        entries = await self._entries(stream_images_request.filter)
        for message in chunked(cri.StreamImagesResponse, entries, self._chunk_size):
            yield message

    async def image_status(self, image_status_request: cri.ImageStatusRequest) -> cri.ImageStatusResponse:
        req = image_status_request
        record = await self._images.find(req.image.image)
        if record is None:  # unknown: an empty answer, not an error
            return cri.ImageStatusResponse()
        view = self._images.view(record)
        info = {"info": json.dumps({"imageSpec": view.config})} if req.verbose else {}
        return cri.ImageStatusResponse(image=image_message(view), info=info)

    async def remove_image(self, remove_image_request: cri.RemoveImageRequest) -> cri.RemoveImageResponse:
        await self._images.remove(remove_image_request.image.image)
        return cri.RemoveImageResponse()

    async def image_fs_info(self, image_fs_info_request: cri.ImageFsInfoRequest) -> cri.ImageFsInfoResponse:
        used, inodes = await self._images.usage()
        where, w_used, w_inodes = await self._writable()
        now = time.time_ns()
        return cri.ImageFsInfoResponse(image_filesystems=[fs_usage(self._images.store.dir, used, inodes, now)],
                                       container_filesystems=[fs_usage(where, w_used, w_inodes, now)])
