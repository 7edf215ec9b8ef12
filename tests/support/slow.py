"""How much slower than these hosts the tests run: 1 here, about 10 in the
cgroup-v2 VM lane (QEMU without KVM), which sets PODRT_TEST_TIME_FACTOR.
Waits for the real parts scale by it; what a test asserts does not."""

from __future__ import annotations

import os

FACTOR = float(os.environ.get("PODRT_TEST_TIME_FACTOR", "1"))
