"""TLS for the HTTP API, as Consul's `tls { https { … } }`: the listener's context (optionally
requiring client certificates) and the context a follower uses to forward to the leader.

Forwarding verifies the leader's certificate against the CA and the name
`server.<datacenter>.consul` (Consul's verify_server_hostname name, which
`peerplane tls cert create -server` puts in every server certificate), whatever address the
leader was reached at, and presents this server's own certificate (servers' certificates carry
clientAuth), so forwarding works with verify_incoming on.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .context import ServerContext

log = logging.getLogger("peerplane.https")
_last_warning = 0.0


class TLSConfigError(ValueError):
    pass


@dataclass(frozen=True)
class HTTPSFiles:
    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify_incoming: bool = False


def _load(ctx: ssl.SSLContext, files: HTTPSFiles) -> None:
    try:
        ctx.load_cert_chain(files.cert_file, files.key_file)
    except (OSError, ssl.SSLError) as e:
        raise TLSConfigError(f"tls: cannot load certificate {files.cert_file} with key "
                             f"{files.key_file}: {e}") from None
    if files.ca_file:
        try:
            ctx.load_verify_locations(cafile=files.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise TLSConfigError(f"tls: cannot load CA {files.ca_file}: {e}") from None


def listener_context(files: HTTPSFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, files)
    if files.verify_incoming:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def forward_context(files: HTTPSFiles) -> ssl.SSLContext:
    """Verifies the leader against the CA (the system's roots when none is configured)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, files)
    if not files.ca_file:
        ctx.load_default_certs()
    return ctx


def server_hostname(datacenter: str) -> str:
    return f"server.{datacenter}.consul"


def server_base(ctx: ServerContext, entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """How this server reaches another server's API (forwarding, fan-out): the base URL and the
    request's TLS arguments. HTTPS when this server has TLS and the other listens for it."""
    if ctx.server_tls is not None and entry.get("HTTPSAddr"):
        return f"https://{entry['HTTPSAddr']}", {
            "ssl": ctx.server_tls, "server_hostname": server_hostname(ctx.datacenter)}
    if entry.get("HTTPAddr"):
        return f"http://{entry['HTTPAddr']}", {}
    return None


def log_https_refused(base: str, error: Exception) -> None:
    """A leader whose certificate this server does not accept (another CA, or no
    server.<dc>.consul name): logged at most every 10 s, the request keeps waiting for a leader
    it can reach and ends in 503 like any unreachable leader."""
    global _last_warning
    if time.monotonic() - _last_warning >= 10.0:
        _last_warning = time.monotonic()
        log.warning("cannot forward to the leader at %s: its certificate is refused (%s); "
                    "server certificates must be signed by the tls ca_file and name "
                    "server.<datacenter>.consul (peerplane tls cert create -server)", base, error)
