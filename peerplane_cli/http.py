"""The HTTP client of the client commands (Consul's api package: errors read the same), and
their output helpers. Stdlib only: a client command must start fast."""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .flags import TLS_FLAGS, CommandError, FlagSet

# ---- the HTTP client (Consul's api package: errors read the same) ----


class Client:
    def __init__(self, fs: FlagSet) -> None:
        addr = fs["http-addr"] or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
        if "://" not in addr:
            ssl = os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "t", "true")
            addr = ("https://" if ssl else "http://") + addr
        self.base = addr.rstrip("/")
        token = fs["token"]
        if not token and fs["token-file"]:
            token = _read_token(fs["token-file"])
        if not token:
            token = os.environ.get("CONSUL_HTTP_TOKEN", "")
        if not token and os.environ.get("CONSUL_HTTP_TOKEN_FILE"):
            token = _read_token(os.environ["CONSUL_HTTP_TOKEN_FILE"])
        self.token = token
        self.partition = fs.values.get("partition", "")
        tls = {name: fs[name] or os.environ.get(env, "") for name, env, _ in TLS_FLAGS}
        self.opener = urllib.request.build_opener(
            _HTTPSHandler(_tls_context(tls), tls["tls-server-name"] or None)
        ) if self.base.startswith("https://") else urllib.request.build_opener()
        # A server that requires client certificates (verify_incoming) closes the connection
        # without a word (asyncio sends no TLS alert): say what is likely missing.
        self.cert_hint = self.base.startswith("https://") and not tls["client-cert"]

    def request(self, method: str, path: str, query: dict[str, str] | None = None,
                body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        """The decoded JSON answer (None for an empty body); CommandError-ready text on
        failure: `Unexpected response code: 400 (<server's text>)` or the transport error."""
        q = dict(query or {})
        if self.partition:
            q["partition"] = self.partition
        url = self.base + urllib.parse.quote(path, safe="/")
        if q:
            url += "?" + "&".join(
                k if v == "" else f"{k}={urllib.parse.quote(v, safe='')}" for k, v in q.items())
        req = urllib.request.Request(url, method=method)
        if body is not None:
            req.data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("X-Consul-Token", self.token)
        try:
            with self.opener.open(req, timeout=60) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            text = _transport_text(e, url)
            if self.cert_hint and isinstance(getattr(e, "reason", e), ConnectionError |
                                             ssl.SSLEOFError):
                text = "the server closed the TLS connection without an answer; it may " \
                       "require a client certificate (-client-cert/-client-key, " \
                       "CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY)"
            raise TransportError(f'{method.title()} "{url}": {text}') from None
        if status not in ok:
            raise StatusError(status, payload.decode(errors="replace"))
        return json.loads(payload) if payload.strip() else None


def _tls_context(tls: dict[str, str]) -> ssl.SSLContext:
    """Consul's TLS client settings: the CA file/path (else the system's roots), a client
    certificate for verify_incoming, and CONSUL_HTTP_SSL_VERIFY=false to skip verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls["ca-file"] or tls["ca-path"]:
            ctx.load_verify_locations(cafile=tls["ca-file"] or None,
                                      capath=tls["ca-path"] or None)
        else:
            ctx.load_default_certs()
        if tls["client-cert"] or tls["client-key"]:
            ctx.load_cert_chain(tls["client-cert"], tls["client-key"] or None)
    except (OSError, ssl.SSLError) as e:
        raise CommandError(f"Error loading TLS files: {e}") from None
    verify = os.environ.get("CONSUL_HTTP_SSL_VERIFY", "").lower()
    if verify in ("0", "f", "false"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """HTTPS with our context and, when given, another name to verify and send as SNI."""

    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(context=context)
        self._ctx, self._name = context, server_name

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        ctx, name = self._ctx, self._name

        class Conn(http.client.HTTPSConnection):
            def connect(self) -> None:
                http.client.HTTPConnection.connect(self)
                self.sock = ctx.wrap_socket(self.sock, server_hostname=name or self.host)

        return self.do_open(Conn, req)


class TransportError(Exception):
    pass


class StatusError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"Unexpected response code: {status} ({body})")
        self.status = status
        self.body = body


def _read_token(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise CommandError(f"Error loading token file: {e}") from None


def _transport_text(e: BaseException, url: str) -> str:
    reason = getattr(e, "reason", e)
    netloc = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, ConnectionRefusedError) or getattr(reason, "errno", None) == \
            errno.ECONNREFUSED:
        return f"dial tcp {netloc}: connect: connection refused"
    if isinstance(reason, socket.gaierror):
        return f"dial tcp: lookup {netloc}: no such host"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(reason, ssl.SSLCertVerificationError):
        if reason.verify_code in (2, 19, 20, 21):  # no path to a trusted root
            return "tls: failed to verify certificate: x509: certificate signed by unknown " \
                   "authority"
        return f"tls: failed to verify certificate: {reason.verify_message}"
    if isinstance(reason, ssl.SSLError):
        text = str(reason).lower()
        if "certificate required" in text:
            return "remote error: tls: certificate required"
        if "wrong version number" in text or "record layer failure" in text:
            return "http: server gave HTTP response to HTTPS client"
        return f"tls: {reason.reason or reason}"
    return str(reason)


# ---- output ----


def columnize(rows: list[list[Any]]) -> str:
    """ryanuber/columnize as Consul uses it: columns padded, glued by two spaces."""
    cells = [[str(c) for c in row] for row in rows]
    widths: list[int] = []
    for row in cells:
        for i, c in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(c))
    return "\n".join(
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells
    )


def out(text: str) -> None:
    print(text, flush=True)


def print_json(value: Any) -> None:
    out(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
