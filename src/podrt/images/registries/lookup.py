"""registries.conf's entries, and where a pull of one name goes: the
endpoints to try in order, mirrors first. This module only decides; it never
connects (the puller does)."""

from __future__ import annotations

from pathlib import Path

import attrs

from podrt.errors import FailedPrecondition, InvalidArgument

PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


@attrs.frozen
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"  # one of PULL_FROM_MIRROR

    def serves(self, by_digest: bool) -> bool:
        return self.pull_from_mirror != ("tag-only" if by_digest else "digest-only")


@attrs.frozen
class Registry:
    """One ``[[registry]]`` table, normalised: ``prefix`` is always set."""

    prefix: str
    location: str  # "" only for a wildcard prefix: names are used as they are
    source: Path   # the file this entry came from, for error messages
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()

    @property
    def wildcard(self) -> bool:
        return self.prefix.startswith("*.")

    def match_length(self, name: str) -> int | None:
        """How much of ``name`` the prefix covers, or None if it does not match.

        A plain prefix matches at a ``/``, ``:`` or ``@`` boundary (or the whole
        name); ``*.example.com`` matches any subdomain's host, with or without
        a port, and covers just the host name.
        """
        if self.wildcard:
            host = name.split("/", 1)[0].split(":", 1)[0]
            suffix = self.prefix[1:]
            return len(host) if len(host) > len(suffix) and host.endswith(suffix) else None
        if name == self.prefix:
            return len(name)
        if name.startswith(self.prefix) and name[len(self.prefix)] in "/:@":
            return len(self.prefix)
        return None


@attrs.frozen
class Endpoint:
    registry_host: str  # host[:port] to connect to
    repository: str     # repository path on that host
    insecure: bool      # plain HTTP and unverified TLS allowed
    mirror: bool


@attrs.frozen
class RegistriesConf:
    registries: tuple[Registry, ...] = ()
    search_registries: tuple[str, ...] = ()
    aliases: dict[str, str] = attrs.field(factory=dict)  # short name -> normalised name
    files: tuple[Path, ...] = ()  # the files read, in order

    def find(self, name: str) -> Registry | None:
        """The entry with the longest matching prefix (a plain prefix wins a tie)."""
        best, best_key = None, (0, False)
        for reg in self.registries:
            if reg.match_length(name) is not None:
                key = (len(reg.prefix), not reg.wildcard)
                if key > best_key:
                    best, best_key = reg, key
        return best

    def alias_for(self, short_name: str) -> str | None:
        """The fully qualified name ``[aliases]`` gives ``short_name`` (no tag), if any."""
        return self.aliases.get(short_name)


def _split(name: str) -> tuple[str, str]:
    host, slash, repository = name.partition("/")
    if not slash or not host or not repository:
        raise InvalidArgument(f'"{name}" is not a registry host followed by a repository')
    return host, repository


def resolve(conf: RegistriesConf, name: str, *, by_digest: bool) -> list[Endpoint]:
    """The endpoints to try for ``name`` (``host/repo``, no tag or digest), in order.

    Mirrors first (those whose ``pull-from-mirror`` allows this kind of pull),
    then the registry's own location, with the matched prefix of ``name``
    rewritten to each endpoint's location.
    """
    host, repository = _split(name)
    if "@" in repository or ":" in repository:
        raise InvalidArgument(f'"{name}" must be a repository name, without tag or digest')
    reg = conf.find(name)
    if reg is None:
        return [Endpoint(host, repository, insecure=False, mirror=False)]

    cut = reg.match_length(name)
    assert cut is not None
    candidates = [(m.location, m.insecure, True) for m in reg.mirrors if m.serves(by_digest)]
    candidates.append((reg.location, reg.insecure, False))
    endpoints: list[Endpoint] = []
    blocked_by: list[Registry] = []
    for location, insecure, is_mirror in candidates:
        physical = location + name[cut:] if location else name
        entry = conf.find(physical)
        if entry is not None and entry.blocked:
            blocked_by.append(entry)
            continue
        ep_host, slash, ep_repository = physical.partition("/")
        if not (slash and ep_host and ep_repository):
            raise FailedPrecondition(f'cannot pull {name}: prefix "{reg.prefix}" in {reg.source} '
                                     f'maps it to "{physical}", which has no repository')
        endpoints.append(Endpoint(ep_host, ep_repository, insecure=insecure, mirror=is_mirror))
    if not endpoints:
        entry = reg if reg.blocked else blocked_by[0]
        why = ""
        if len(candidates) > 1:
            why = "; its mirrors are blocked too"
        elif reg.mirrors:
            why = f"; none of its mirrors serves pulls by {'digest' if by_digest else 'tag'}"
        raise FailedPrecondition(
            f'cannot pull {name}: registry "{entry.prefix}" is blocked in {entry.source}{why}')
    return endpoints
