"""What can be wrong with a layer: refused (UnsafeLayer), unreadable
(CorruptLayer), or doubtful enough for a warning, rate-limited so that a
layer of many odd entries cannot flood the log."""

from __future__ import annotations

import logging

from podrt.logutil import RateLimited

noisy = RateLimited(logging.getLogger("podrt.images.unpack"))


class UnsafeLayer(ValueError):
    """An entry would land outside the target, or the layer is one podrt will not apply."""


class CorruptLayer(ValueError):
    """The stream is not a readable (compressed) tar."""
