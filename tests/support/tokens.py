"""A Docker registry token server of the tests' own, on 127.0.0.1, and the
openssl-CLI helpers for the keys and certificates it (and a TLS registry) needs.

The flow is Distribution's token auth: the registry answers 401 with
`Bearer realm=...,service=...,scope=...`; the client asks the realm
(GET with Basic auth, or POST grant_type=refresh_token for an identity token)
and gets a JWT that the registry verifies against `rootcertbundle`. The JWT
carries its certificate in `x5c`, which registry 2.8 accepts without a libtrust
`kid`. Signing is RS256 with `openssl dgst` (no `cryptography` in the venv):
PKCS#1 v1.5 output is exactly the JWS signature.

Every token request is recorded (`requests`) so a test can count fetches.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import attrs

SERVICE = "podrt-test-registry"
ISSUER = "podrt-test-token-issuer"
LIFETIME = 300


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=data, check=True, capture_output=True).stdout


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def self_signed(directory: Path, name: str, cn: str) -> tuple[Path, Path]:
    """An RSA key and a self-signed certificate for it: (cert, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", f"/CN={cn}")
    return cert, key


def make_ca_and_server_cert(directory: Path, ip: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for `ip` (IP SAN, serverAuth):
    (ca.crt, server.crt, server.key). EC keys: quick to make."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr, ext = (directory / n for n in ("server.crt", "server.key", "server.csr", "server.ext"))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
             "-subj", "/CN=podrt test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={ip}")
    ext.write_text(f"subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@attrs.frozen
class TokenRequest:
    method: str  # GET (Basic auth) or POST (refresh token)
    subject: str  # the user it was for; "" when refused
    scopes: tuple[str, ...]
    status: int


class TokenServer:
    """The realm for a registry started with `Registry(token=...)`; `users` may log
    in with a password, `refresh_tokens` (identity token -> user) by POST."""

    def __init__(self, directory: Path, users: dict[str, str], refresh_tokens: dict[str, str] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.users, self.refresh_tokens = users, dict(refresh_tokens or {})
        self.service, self.issuer = SERVICE, ISSUER
        self.cert, self.key = self_signed(directory, "token-signer", ISSUER)
        self._x5c = base64.b64encode(_openssl("x509", "-in", str(self.cert), "-outform", "DER")).decode()
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self._http.server_address[1]}/token"
        self._thread = threading.Thread(target=self._http.serve_forever, name="token-server", daemon=True)
        self._thread.start()

    def mint(self, subject: str, scopes: list[str] | tuple[str, ...], *, audience: str = SERVICE,
             lifetime: int = LIFETIME) -> str:
        """A signed JWT granting `scopes` ("repository:<name>:<actions>"), pull and push only."""
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in ("pull", "push")]
            if kind == "repository" and name and granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": audience, "exp": now + lifetime, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = _openssl("dgst", "-sha256", "-sign", str(self.key), data=signing_input.encode())
        return f"{signing_input}.{_b64url(signature)}"

    def count(self, scope: str | None = None) -> int:
        """Token requests answered with a token (for `scope`, if given)."""
        with self._lock:
            return sum(1 for r in self.requests if r.status == 200 and (scope is None or scope in r.scopes))

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet test output

        def _reply(self, method: str, subject: str, params: dict[str, list[str]]) -> None:
            scopes = tuple(s for value in params.get("scope", []) for s in value.split(" ") if s)
            if not subject:
                server._record(TokenRequest(method, "", scopes, 401))
                body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}).encode()
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="podrt-test-tokens"')
            elif params.get("service", [""])[0] != server.service:
                server._record(TokenRequest(method, subject, scopes, 400))
                body = b'{"error": "unknown service"}'
                self.send_response(400)
            else:
                token = server.mint(subject, scopes)
                server._record(TokenRequest(method, subject, scopes, 200))
                body = json.dumps({"token": token, "access_token": token, "expires_in": LIFETIME,
                                   "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            subject = ""
            scheme, _, value = self.headers.get("Authorization", "").partition(" ")
            if url.path == "/token" and scheme.lower() == "basic":
                try:
                    user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    user, password = "", ""
                if user in server.users and secrets.compare_digest(server.users[user], password):
                    subject = user
            self._reply("GET", subject, parse_qs(url.query))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode(errors="replace"))
            subject = ""
            if (urlsplit(self.path).path == "/token" and form.get("grant_type") == ["refresh_token"]):
                subject = server.refresh_tokens.get(form.get("refresh_token", [""])[0], "")
            self._reply("POST", subject, form)

    return Handler
