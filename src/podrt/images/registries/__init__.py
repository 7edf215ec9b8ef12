"""Where a pull goes: containers-registries.conf(5) v2 and containers-certs.d(5).

Air-gapped and bandwidth-starved nodes depend on mirrors: the image names in
pod specs stay ``docker.io/...`` while the bytes come from a registry on the
node's own network. The node's ``/etc/containers/registries.conf`` (plus
``registries.conf.d``) is the file CRI-O, Podman and skopeo already read, so
podrt reads the same file with the same rules (containers/image's
``sysregistriesv2``) and one edit steers every tool on the node alike.

A pull through a mirror records the name the user asked for, not the mirror's:
the mirror is only where the bytes came from, and kubelet looks the image up
again by the name in the pod spec.

This package only decides; it never connects. ``resolve`` (lookup.py) lists
the endpoints to try in order and ``CertsD.for_host`` (certs.py) names the TLS
files for one of them; the puller does the network work. conf.py reads the
files.

Behaviour kept from containers/image, since the file is shared with it:

* ``blocked = true`` forbids contacting the registry's own location, not its
  mirrors: a blocked registry with mirrors is pulled through its mirrors only
  (what OpenShift's "NeverContactSource" mirror policy writes). Any endpoint
  whose own name falls under a blocked entry is skipped.
* Prefix ``example.com`` also matches ``example.com:5000/...`` (the ``:``
  boundary, documented upstream as unintended but kept).
* Unknown keys are ignored with a log line (containers/image ignores them),
  so a file written for a newer Podman does not stop the daemon.
"""

from __future__ import annotations

from podrt.images.registries.certs import DEFAULT_CERTS_DIRS, CertsD, TlsFiles, ssl_context
from podrt.images.registries.conf import DEFAULT_REGISTRIES_CONF, load
from podrt.images.registries.lookup import PULL_FROM_MIRROR, Endpoint, Mirror, RegistriesConf, Registry, resolve

__all__ = ["DEFAULT_CERTS_DIRS", "DEFAULT_REGISTRIES_CONF", "PULL_FROM_MIRROR", "CertsD", "Endpoint", "Mirror",
           "RegistriesConf", "Registry", "TlsFiles", "load", "resolve", "ssl_context"]
