"""A real registry for tests (Debian's docker-registry, Distribution v2) on
127.0.0.1, and test images built here and pushed over the HTTP API.

Every pull in the tests goes to this loopback registry; nothing names
another host.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from tests.support.slow import FACTOR
from tests.support.tokens import TokenServer

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """`docker-registry serve` on a free loopback port; basic auth when `users` is
    given, bearer tokens from `token` (a TokenServer), HTTPS when `tls` is a
    (certificate, key) pair."""

    def __init__(self, base: Path, users: dict[str, str] | None = None, *, token: TokenServer | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.base = base
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.token, self.tls = token, tls
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        base.mkdir(parents=True, exist_ok=True)
        auth = ""
        if users:
            lines = [subprocess.run(["htpasswd", "-Bbn", u, p], check=True, capture_output=True, text=True).stdout.strip()
                     for u, p in users.items()]
            (base / "htpasswd").write_text("\n".join(lines) + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {base / 'htpasswd'}\n"
        elif token:
            auth = (f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n"
                    f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert}\n")
        tls_conf = f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else ""
        (base / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{tls_conf}{auth}")
        self.log = open(base / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(base / "config.yml")], stdout=self.log, stderr=subprocess.STDOUT)
        # The health wait only needs "it answers": our own certificate is not under test here.
        unverified = None
        if tls:
            unverified = ssl.create_default_context()
            unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + 10 * FACTOR
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1, context=unverified)
                return
            except urllib.error.HTTPError:
                return  # 401 with auth on: it is up
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start on {self.host}")

    def blob_gets(self, since: int = 0) -> list[str]:
        """Digests of the blob downloads in the access log (from byte offset `since`)."""
        text = (self.base / "registry.log").read_bytes()[since:].decode(errors="replace")
        return re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP', text)

    def log_size(self) -> int:
        return (self.base / "registry.log").stat().st_size

    def stop(self) -> None:
        """By PID: the registry is our child."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes], modes: dict[str, int] | None = None) -> tuple[bytes, bytes]:
    """(gzipped layer, its uncompressed tar) holding `files` (path -> content;
    mode 0644 unless `modes` says otherwise)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), (modes or {}).get(path, 0o644), 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    plain = buf.getvalue()
    return gzip.compress(plain, mtime=0), plain


@attrs.frozen
class BuiltImage:
    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]  # gzipped

    @property
    def digest(self) -> str:
        return digest(self.manifest)

    @property
    def config_digest(self) -> str:
        return digest(self.config)


def image(*layer_files: dict[str, bytes], arch: str = "amd64", cmd: tuple[str, ...] = ("/bin/sh",),
          user: str = "", modes: dict[str, int] | None = None, built: tuple[tuple[bytes, bytes], ...] = (),
          extra_config: dict[str, Any] | None = None) -> BuiltImage:
    """`built`: (gzipped, plain) layers made elsewhere, put below those of `layer_files`."""
    built = (*built, *(layer(files, modes) for files in layer_files))
    config = json.dumps({
        "architecture": arch, "os": "linux", "config": {"Cmd": list(cmd), "User": user, **(extra_config or {})},
        "rootfs": {"type": "layers", "diff_ids": [digest(plain) for _, plain in built]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest(gz), "size": len(gz)} for gz, _ in built],
    }).encode()
    return BuiltImage(manifest, config, tuple(gz for gz, _ in built))


BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
APPLETS = ("sh", "echo", "cat", "sleep", "id", "ls", "true", "false", "env", "pwd", "touch", "mkdir", "kill", "ps",
           "grep", "head", "wc", "stat", "mount", "readlink", "dd", "tail", "yes")


def busybox_layer() -> tuple[bytes, bytes]:
    """busybox-static with its applets as hard links, an /etc/passwd and
    /etc/group with a named user and groups, and /tmp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.size, info.linkname = kind, mode, 1_700_000_000, len(data), link
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "etc", "tmp", "home", "home/app"):
            add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, BUSYBOX.read_bytes())
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.LNKTYPE, 0o755, link="bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\napp:x:1000:\nwheel:x:10:app\nvideo:x:44:app,other\n"
            b"nogroup:x:65534:\n")
    plain = buf.getvalue()
    return gzip.compress(plain, mtime=0), plain


def busybox_image(**config: Any) -> BuiltImage:
    """A real, small image to run containers from; `config` goes into the image config."""
    return image(built=(busybox_layer(),), cmd=("/bin/sh",), extra_config=config)


def index(*entries: tuple[BuiltImage, str]) -> bytes:
    """An OCI image index of (image, architecture) entries."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": len(img.manifest),
         "platform": {"os": "linux", "architecture": arch}} for img, arch in entries]}).encode()


async def push(registry: Registry, repo: str, img: BuiltImage, tag: str, user: tuple[str, str] | None = None,
               ssl_context: ssl.SSLContext | None = None) -> None:
    """Blobs by monolithic upload, then the manifest under `tag`. A token registry
    gets a pull+push token minted directly (not counted as a token request); a TLS
    registry is not verified unless `ssl_context` is given: the push is setup."""
    if registry.token:
        headers = {"Authorization": f"Bearer {registry.token.mint('pusher', [f'repository:{repo}:pull,push'])}"}
    else:
        headers = {"Authorization": aiohttp.encode_basic_auth(*user)} if user else {}
    verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else not registry.tls
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=verify)) as s:
        for blob in (img.config, *img.layers):
            async with s.post(f"{registry.url}/v2/{repo}/blobs/uploads/") as r:
                assert r.status == 202, await r.text()
                location = r.headers["Location"]
            sep = "&" if "?" in location else "?"
            url = location if location.startswith("http") else f"{registry.url}{location}"
            async with s.put(f"{url}{sep}digest={digest(blob)}", data=blob,
                             headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == 201, await r.text()
        await put_manifest(s, registry, repo, tag, img.manifest, OCI_MANIFEST)


async def put_manifest(session: aiohttp.ClientSession, registry: Registry, repo: str, ref: str, body: bytes,
                       media_type: str) -> None:
    async with session.put(f"{registry.url}/v2/{repo}/manifests/{ref}", data=body,
                           headers={"Content-Type": media_type}) as r:
        assert r.status == 201, await r.text()


def manifest_doc(body: bytes) -> dict[str, Any]:
    return json.loads(body)  # type: ignore[no-any-return]


BUSYBOX_IMG = busybox_image(Env=["FROM_IMAGE=yes", "OVERRIDE=image"], WorkingDir="/home/app", StopSignal="SIGINT")
VOLUME_IMG = busybox_image(Env=["VOLUME=yes"])  # the same layers, an image of its own


def busybox_registry() -> Registry:
    """A registry on 127.0.0.1 with test/busybox:v1 and test/volume:v1; stop() it."""
    import asyncio
    import tempfile

    reg = Registry(Path(tempfile.mkdtemp(prefix="podrt-registry-")))
    try:
        asyncio.run(push(reg, "test/busybox", BUSYBOX_IMG, "v1"))
        asyncio.run(push(reg, "test/volume", VOLUME_IMG, "v1"))
    except BaseException:
        reg.stop()
        raise
    return reg


def serve_busybox(base: Path, repo: str) -> tuple[Registry, Path]:
    """For a benchmark: a registry under `base` with busybox as `repo`:v1, and
    a registries.conf that lets the daemon pull from it (insecure, 127.0.0.1)."""
    import asyncio

    reg = Registry(base / "registry")
    try:
        asyncio.run(push(reg, repo, busybox_image(), "v1"))
    except BaseException:
        reg.stop()
        raise
    conf = base / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
    return reg, conf
