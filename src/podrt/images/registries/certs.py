"""containers-certs.d(5): the TLS files for one registry host, and the
SSL context a pull to it uses."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from pathlib import Path

import attrs

from podrt.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


@attrs.frozen
class TlsFiles:
    """TLS material for one registry host. CA files are added to the system
    trust store, not used instead of it (as containers/image does)."""

    ca_files: list[Path] = attrs.field(factory=list)
    client_cert: Path | None = None
    client_key: Path | None = None


@attrs.frozen
class CertsD:
    """containers-certs.d(5): ``<dir>/<host[:port]>/`` holding ``*.crt`` CA
    certificates and ``*.cert`` + ``*.key`` client pairs. Only the first
    directory that has an entry for the host is used, as containers/image does."""

    dirs: list[Path] = attrs.field(factory=lambda: list(DEFAULT_CERTS_DIRS))

    def for_host(self, host_port: str) -> TlsFiles:
        if not host_port or "/" in host_port or host_port in (".", ".."):
            raise InvalidArgument(f'"{host_port}" is not a registry host[:port]')
        for base in self.dirs:
            directory = base / host_port
            try:
                names = sorted(p.name for p in directory.iterdir() if p.is_file())
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            return _tls_files(directory, names)
        return TlsFiles()


def _tls_files(directory: Path, names: list[str]) -> TlsFiles:
    present = set(names)
    pairs: list[tuple[Path, Path]] = []
    for name in names:
        if name.endswith(".cert"):
            key_name = name.removesuffix(".cert") + ".key"
            if key_name not in present:
                raise FailedPrecondition(
                    f"{directory / name}: client certificate has no key {directory / key_name}")
            pairs.append((directory / name, directory / key_name))
        elif name.endswith(".key"):
            cert_name = name.removesuffix(".key") + ".cert"
            if cert_name not in present:
                raise FailedPrecondition(
                    f"{directory / name}: client key has no certificate {directory / cert_name}")
    if len(pairs) > 1:  # containers/image offers them all; one is enough for a node
        log.warning("%s: %d client certificates, using %s", directory, len(pairs), pairs[0][0].name)
    cert, key = pairs[0] if pairs else (None, None)
    return TlsFiles([directory / n for n in names if n.endswith(".crt")], cert, key)


def ssl_context(certs_dirs: Iterable[Path], host: str) -> ssl.SSLContext | None:
    """The TLS context for `host`: the system CAs plus certs.d's, and its client
    certificate; None when certs.d has nothing for it (the defaults apply)."""
    files = CertsD(list(certs_dirs)).for_host(host)
    if not files.ca_files and files.client_cert is None:
        return None
    ctx = ssl.create_default_context()
    for ca in files.ca_files:
        ctx.load_verify_locations(cafile=str(ca))
    if files.client_cert is not None:
        ctx.load_cert_chain(str(files.client_cert), str(files.client_key))
    return ctx
