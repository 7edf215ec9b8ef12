"""AppArmor profiles for containers, where the kernel has AppArmor.

As in containerd and CRI-O, a Localhost profile is applied by name and must
be loaded already. RuntimeDefault applies nothing: podrt ships and loads no
default profile of its own (CRI-O's crio-default would have to be loaded by
the runtime). Unconfined applies nothing. Where the kernel has no AppArmor
(as on these machines) every request is accepted and nothing is applied, as
CRI-O does; a Localhost request is logged there, since it is not enforced.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from podrt.errors import FailedPrecondition
from podrt.security.seccomp import ProfileType

log = logging.getLogger(__name__)

ENABLED = Path("/sys/module/apparmor/parameters/enabled")
PROFILES = Path("/sys/kernel/security/apparmor/profiles")
LOCALHOST_PREFIX = "localhost/"  # the deprecated apparmor_profile's form, also sent in localhost_ref by some kubelets


@functools.cache
def enabled() -> bool:
    try:
        return ENABLED.read_text().strip() == "Y"
    except OSError:
        return False


def loaded(name: str) -> bool:
    """Lines of the profiles file are "<name> (<mode>)"."""
    try:
        lines = PROFILES.read_text().splitlines()
    except OSError:
        return False
    return any(line.rpartition(" (")[0] == name for line in lines)


def profile_name(ref: str) -> str:
    return ref.removeprefix(LOCALHOST_PREFIX)


def process_profile(kind: ProfileType, ref: str, *, container: str = "", apparmor_on: bool | None = None) -> str:
    """process.apparmorProfile for a request ("" for none); FailedPrecondition
    for a Localhost profile the kernel has not loaded."""
    if kind != ProfileType.LOCALHOST:
        return ""
    name = profile_name(ref)
    if not (enabled() if apparmor_on is None else apparmor_on):
        log.info("container %s asks for AppArmor profile %s, but AppArmor is not enabled on this host: not applied",
                 container or "?", name)
        return ""
    if not loaded(name):
        raise FailedPrecondition(f"config.linux.security_context.apparmor: profile {name!r} is not loaded "
                                 f"(load it with apparmor_parser first)")
    return name
