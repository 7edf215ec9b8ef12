"""ImageService: every RPC answers UNIMPLEMENTED until the image store lands."""

from __future__ import annotations

from podrt.api.runtime import v1 as cri


class ImageService(cri.ImageServiceBase):
    """The generated base answers UNIMPLEMENTED for each RPC."""
