"""The registry client against a real registry on 127.0.0.1 with Distribution's
bearer token auth (our own token server as the realm) and with HTTPS (our own
CA, found through a certs.d layout as the puller finds it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from podrt.images import registries
from podrt.images.registry import AuthError, Credentials, RegistryClient, RegistryError
from tests.support.registry import REGISTRY_BIN, Registry, digest, image, push
from tests.support.tokens import TokenServer, make_ca_and_server_cert

pytestmark = [
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN),
                       reason="needs Debian's docker-registry (scripts/install-test-deps.sh installs it)"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for test keys and certificates"),
]

IMG = image({"etc/hello": b"hello\n"}, {"bin/tool": b"\x7fELF" + b"x" * 5000})
USERS = {"alice": "s3cret"}
REFRESH = {"refresh-alice-0123": "alice"}


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="podrt-registry-auth-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tokens(workdir: Path) -> Iterator[TokenServer]:
    server = TokenServer(workdir / "tokens", USERS, REFRESH)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_registry(workdir: Path, tokens: TokenServer) -> Iterator[Registry]:
    reg = Registry(workdir / "token-registry", token=tokens)
    asyncio.run(push(reg, "test/app", IMG, "v1"))
    asyncio.run(push(reg, "test/other", IMG, "v1"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def pki(workdir: Path) -> tuple[Path, Path, Path]:
    return make_ca_and_server_cert(workdir / "pki")


@pytest.fixture(scope="module")
def tls_registry(workdir: Path, tokens: TokenServer, pki: tuple[Path, Path, Path]) -> Iterator[Registry]:
    """HTTPS and bearer tokens together, as a real private registry would be."""
    ca, cert, key = pki
    reg = Registry(workdir / "tls-registry", token=tokens, tls=(cert, key))
    asyncio.run(push(reg, "test/app", IMG, "v1", ssl_context=ssl.create_default_context(cafile=str(ca))))
    yield reg
    reg.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


def certs_d_context(certs_dirs: list[Path], host: str) -> ssl.SSLContext | None:
    """The context the puller builds for `host` from certs.d."""
    return registries.ssl_context(certs_dirs, host)


async def pull_all(client: RegistryClient, repo: str) -> None:
    """Manifest by tag, then every blob: several requests under one scope."""
    manifest = await client.manifest(repo, "v1")
    assert manifest.digest == IMG.digest
    for blob in (IMG.config, *IMG.layers):
        assert b"".join([chunk async for chunk in client.blob(repo, digest(blob))]) == blob


# ---- bearer tokens ----------------------------------------------------------


async def test_password_gets_one_token_per_scope(token_registry: Registry, tokens: TokenServer,
                                                 session: aiohttp.ClientSession) -> None:
    client = RegistryClient(session, token_registry.host, insecure=True, credentials=Credentials("alice", "s3cret"))
    app, other = tokens.count(pull_scope("test/app")), tokens.count(pull_scope("test/other"))
    await pull_all(client, "test/app")
    await client.manifest("test/app", IMG.digest)
    assert tokens.count(pull_scope("test/app")) == app + 1  # 4 requests, one token
    await pull_all(client, "test/other")
    assert tokens.count(pull_scope("test/other")) == other + 1  # a new scope, a new token
    last = tokens.requests[-1]
    assert (last.method, last.subject, last.scopes) == ("GET", "alice", (pull_scope("test/other"),))


async def test_wrong_password_is_auth_error(token_registry: Registry, tokens: TokenServer,
                                            session: aiohttp.ClientSession) -> None:
    client = RegistryClient(session, token_registry.host, insecure=True, credentials=Credentials("alice", "wrong"))
    with pytest.raises(AuthError, match="refused the credentials"):
        await client.manifest("test/app", "v1")
    assert tokens.requests[-1].status == 401


async def test_no_credentials_is_auth_error(token_registry: Registry, session: aiohttp.ClientSession) -> None:
    with pytest.raises(AuthError):
        await RegistryClient(session, token_registry.host, insecure=True).manifest("test/app", "v1")


async def test_identity_token_is_exchanged_at_the_realm(token_registry: Registry, tokens: TokenServer,
                                                        session: aiohttp.ClientSession) -> None:
    client = RegistryClient(session, token_registry.host, insecure=True,
                            credentials=Credentials(identity_token="refresh-alice-0123"))
    await pull_all(client, "test/app")
    last = tokens.requests[-1]
    assert (last.method, last.subject, last.scopes, last.status) == ("POST", "alice", (pull_scope("test/app"),), 200)
    bad = RegistryClient(session, token_registry.host, insecure=True, credentials=Credentials(identity_token="stale"))
    with pytest.raises(AuthError):
        await bad.manifest("test/app", "v1")


async def test_registry_token_is_used_as_it_is(token_registry: Registry, tokens: TokenServer,
                                               session: aiohttp.ClientSession) -> None:
    async with session.get(tokens.realm, params={"service": tokens.service, "scope": pull_scope("test/app")},
                           headers={"Authorization": aiohttp.encode_basic_auth("alice", "s3cret")}) as r:
        assert r.status == 200
        token = (await r.json())["token"]
    before = len(tokens.requests)
    client = RegistryClient(session, token_registry.host, insecure=True, credentials=Credentials(registry_token=token))
    await pull_all(client, "test/app")
    assert len(tokens.requests) == before  # never asked the realm
    with pytest.raises(AuthError):  # the token grants test/app only
        await client.manifest("test/other", "v1")


async def test_token_for_another_service_is_refused(token_registry: Registry, tokens: TokenServer,
                                                    session: aiohttp.ClientSession) -> None:
    """The registry really checks the JWT (audience here), so the passes above mean something."""
    forged = tokens.mint("alice", [pull_scope("test/app")], audience="some-other-registry")
    client = RegistryClient(session, token_registry.host, insecure=True, credentials=Credentials(registry_token=forged))
    with pytest.raises(AuthError):
        await client.manifest("test/app", "v1")


# ---- TLS --------------------------------------------------------------------


async def test_tls_with_the_ca_from_certs_d(tls_registry: Registry, pki: tuple[Path, Path, Path], tmp_path: Path,
                                           session: aiohttp.ClientSession) -> None:
    host_dir = tmp_path / "certs.d" / tls_registry.host
    host_dir.mkdir(parents=True)
    shutil.copy(pki[0], host_dir / "ca.crt")
    ctx = certs_d_context([tmp_path / "empty", tmp_path / "certs.d"], tls_registry.host)
    assert ctx is not None
    client = RegistryClient(session, tls_registry.host, credentials=Credentials("alice", "s3cret"), ssl_context=ctx)
    await pull_all(client, "test/app")


async def test_tls_without_the_ca_fails_verification(tls_registry: Registry, tmp_path: Path,
                                                     session: aiohttp.ClientSession) -> None:
    assert certs_d_context([tmp_path], tls_registry.host) is None  # no certs.d entry: system CAs only
    client = RegistryClient(session, tls_registry.host, credentials=Credentials("alice", "s3cret"))
    with pytest.raises(RegistryError, match="certificate verify failed"):
        await client.manifest("test/app", "v1")


async def test_insecure_takes_tls_without_verifying_it(tls_registry: Registry, session: aiohttp.ClientSession) -> None:
    """registries.conf `insecure` on a TLS registry whose CA we lack: TLS,
    unverified (as containers/image does), never plain HTTP."""
    client = RegistryClient(session, tls_registry.host, insecure=True, credentials=Credentials("alice", "s3cret"))
    await asyncio.wait_for(pull_all(client, "test/app"), timeout=20)
    assert client.base.startswith("https://")
