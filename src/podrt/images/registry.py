"""A client for one registry (Distribution HTTP API v2) on asyncio, over aiohttp.

It fetches manifests and streams blobs; it decides nothing about where to
pull from (registries.py) or what to store (the puller and blobs.py). Auth
follows the registry's challenge: a request goes out anonymously or with what
worked before; a 401 names the scheme: Basic (credentials sent as they are)
or Bearer (a token fetched from the realm for that scope, cached per scope
until it expires). PullImage's AuthConfig maps onto `Credentials`:
username/password (or `auth`, their base64), an identity token (an OAuth2
refresh token, exchanged at the realm) or a registry token (a bearer token
used as it is).
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import attrs

from podrt import errors
from podrt.images.blobs import digest_of

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = frozenset(MANIFEST_TYPES[:2])
MAX_MANIFEST = 4 * 1024 * 1024  # like containerd: a manifest is small; refuse a flood
CHUNK = 1 << 20  # fewer thread hops for the aiofiles writes
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


log = logging.getLogger(__name__)


class RegistryError(errors.Unavailable):
    """The registry could not be reached or answered with an error."""


class AuthError(errors.PermissionDenied):
    """The registry refused the credentials (or asked for some and had none)."""


@attrs.frozen
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def from_docker(cls, auth: str = "", username: str = "", password: str = "",
                    identity_token: str = "", registry_token: str = "") -> Credentials:
        """Docker's two forms of a user and password, as config.json and CRI's
        AuthConfig carry them: `auth`, base64 of "user:password", which wins
        when given (as docker reads its config.json), or `username` and `password`."""
        if auth:
            try:
                username, _, password = base64.b64decode(auth, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise errors.InvalidArgument("auth: not base64 of user:password") from None
        return cls(username, password, identity_token, registry_token)

    @property
    def basic(self) -> dict[str, str]:
        """The Basic Authorization header, or none without a username."""
        return {"Authorization": aiohttp.encode_basic_auth(self.username, self.password)} if self.username else {}


@attrs.frozen
class Manifest:
    media_type: str
    body: bytes
    digest: str  # sha256 of body


@attrs.define
class _Token:
    value: str
    expires: float


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


_PLAIN_HTTP: set[str] = set()  # insecure hosts found to speak plain HTTP: not asked for HTTPS again


class RegistryClient:
    """One registry host. `insecure` (registries.conf) means, as in
    containers/image: HTTPS without verifying the certificate, and plain HTTP
    when the host does not speak TLS at all."""

    def __init__(self, session: aiohttp.ClientSession, host: str, *, insecure: bool = False,
                 credentials: Credentials = Credentials(), ssl_context: ssl.SSLContext | None = None) -> None:
        self.session, self.host, self.insecure = session, host, insecure
        self.base = f"{'http' if insecure and host in _PLAIN_HTTP else 'https'}://{host}/v2/"
        self.credentials = credentials
        self.ssl: ssl.SSLContext | bool = False if insecure else ssl_context if ssl_context is not None else True
        # the token service gets credentials: always verified (the registry's certs.d CA when given),
        # even for a registry configured insecure
        self.token_ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._tokens: dict[str, _Token] = {}
        self._basic = False  # the registry asked for Basic once: send it up front

    # ---- auth ---------------------------------------------------------------

    def _auth_header(self, scope: str) -> dict[str, str]:
        if self.credentials.registry_token:
            return {"Authorization": f"Bearer {self.credentials.registry_token}"}
        token = self._tokens.get(scope)
        if token is not None and token.expires > time.monotonic():
            return {"Authorization": f"Bearer {token.value}"}
        return self.credentials.basic if self._basic else {}

    async def _answer_challenge(self, header: str, scope: str) -> None:
        scheme, params = _challenge(header)
        if scheme == "basic":
            if not self.credentials.basic or self._basic:
                raise AuthError(f"{self.host}: authentication required (basic); no or wrong credentials")
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"{self.host}: unsupported authentication challenge {header[:200]!r}")
        self._tokens[scope] = await self._fetch_token(params, scope)

    async def _fetch_token(self, params: dict[str, str], scope: str) -> _Token:
        query = {"service": params.get("service", ""), "scope": scope}
        creds = self.credentials
        try:
            if creds.identity_token:  # OAuth2 refresh token, as docker login stores it
                form = {**query, "grant_type": "refresh_token", "refresh_token": creds.identity_token, "client_id": "podrt"}
                resp = await self.session.post(params["realm"], data=form, ssl=self.token_ssl)
            else:
                resp = await self.session.get(f"{params['realm']}?{urlencode(query)}", headers=creds.basic, ssl=self.token_ssl)
            async with resp:
                if resp.status in (400, 401, 403):  # 400: OAuth2's invalid_grant for a bad refresh token
                    raise AuthError(f"{self.host}: the token service refused the credentials for {scope}")
                if resp.status != 200:
                    raise RegistryError(f"{self.host}: token service answered {resp.status}")
                doc = await resp.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise RegistryError(f"{self.host}: token service {params['realm']}: {exc}") from None
        value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise RegistryError(f"{self.host}: token service sent no token")
        lifetime = doc.get("expires_in", 60)
        return _Token(value, time.monotonic() + max(float(lifetime) if isinstance(lifetime, (int, float)) else 60.0, 10.0) - 5)

    async def _get(self, path: str, repo: str, headers: dict[str, str], *, raw: bool = False) -> aiohttp.ClientResponse:
        """GET with auth; one retry after answering a challenge. The caller
        closes the response. `raw`: the body exactly as stored, never
        content-decoded (a blob's digest covers its stored bytes)."""
        if raw:
            headers = {**headers, "Accept-Encoding": "identity"}
        scope = f"repository:{repo}:pull"
        for attempt in (1, 2):
            resp = await self._send(path, {**headers, **self._auth_header(scope)}, raw)
            if resp.status != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.release()
            if attempt == 2:
                raise AuthError(f"{self.host}: access to {repo} denied: the registry refused the credentials")
            await self._answer_challenge(challenge, scope)
        raise AssertionError("unreachable")

    async def _send(self, path: str, headers: dict[str, str], raw: bool) -> aiohttp.ClientResponse:
        """One GET; an insecure host that fails the TLS handshake is asked again over plain HTTP."""
        try:
            return await self.session.get(self.base + path, headers=headers, ssl=self.ssl, auto_decompress=not raw)
        except aiohttp.ClientError as exc:
            no_tls = isinstance(exc, aiohttp.ClientSSLError) or isinstance(getattr(exc, "os_error", None), ssl.SSLError)
            if not self.insecure or not no_tls or self.base.startswith("http:"):  # only a failed handshake says "no TLS"
                _PLAIN_HTTP.discard(self.host)
                raise RegistryError(f"{self.host}: {exc}") from None
            log.info("%s: no TLS there (%s); plain HTTP, as it is configured insecure", self.host, exc)
        self.base = f"http://{self.host}/v2/"
        _PLAIN_HTTP.add(self.host)
        return await self._send(path, headers, raw)

    # ---- content ------------------------------------------------------------

    async def manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest (or index) `ref` (tag or digest) of `repo`; a digest ref is verified."""
        resp = await self._get(f"{repo}/manifests/{ref}", repo, {"Accept": ", ".join(MANIFEST_TYPES)})
        async with resp:
            if resp.status == 404:
                raise errors.NotFound(f"{self.host}/{repo}:{ref}: manifest unknown to the registry")
            if resp.status != 200:
                raise RegistryError(f"{self.host}/{repo}: manifest {ref}: HTTP {resp.status}")
            body = bytearray()
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):  # read() returns only what is buffered
                    body += chunk
                    if len(body) > MAX_MANIFEST:
                        raise RegistryError(f"{self.host}/{repo}: manifest {ref} is larger than {MAX_MANIFEST} bytes")
            except aiohttp.ClientError as exc:
                raise RegistryError(f"{self.host}/{repo}: manifest {ref}: {exc}") from None
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        digest = digest_of(bytes(body))
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"{self.host}/{repo}: manifest {ref} has digest {digest}")
        return Manifest(media_type, bytes(body), digest)

    async def blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive (the blob store verifies them), in
        chunks of up to 1 MiB: fewer hops for the writes than raw reads (measured faster)."""
        resp = await self._get(f"{repo}/blobs/{digest}", repo, {}, raw=True)
        async with resp:
            if resp.status == 404:
                raise errors.NotFound(f"{self.host}/{repo}: blob {digest} unknown to the registry")
            if resp.status != 200:
                raise RegistryError(f"{self.host}/{repo}: blob {digest}: HTTP {resp.status}")
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    yield chunk
            except aiohttp.ClientError as exc:
                raise RegistryError(f"{self.host}/{repo}: blob {digest}: {exc}") from None
