"""The peering token: base64 of JSON, exactly the fields and error texts of Consul."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from .gojson import GoJSONError, go_unmarshal

_B64 = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class TokenError(ValueError):
    pass


@dataclass
class PeeringToken:
    CA: list[str] | None = None
    ManualServerAddresses: list[str] | None = None
    ServerAddresses: list[str] | None = None
    ServerName: str = ""
    PeerID: str = ""
    EstablishmentSecret: str = ""
    Remote: dict[str, Any] = field(
        default_factory=lambda: {"Partition": "", "Datacenter": "", "Locality": None}
    )

    def encode(self) -> str:
        doc = {
            "CA": self.CA,
            "ManualServerAddresses": self.ManualServerAddresses,
            "ServerAddresses": self.ServerAddresses,
            "ServerName": self.ServerName,
            "PeerID": self.PeerID,
            "EstablishmentSecret": self.EstablishmentSecret,
            "Remote": self.Remote,
        }
        return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


_TOKEN_SCHEMA = {
    "CA": "[]string",
    "ManualServerAddresses": "[]string",
    "ServerAddresses": "[]string",
    "ServerName": "string",
    "PeerID": "string",
    "EstablishmentSecret": "string",
    "Remote": {"Partition": "string", "Datacenter": "string", "Locality": "any"},
}


def _b64decode(text: str) -> bytes:
    """Go's base64.StdEncoding: strict padding, '\\r' and '\\n' ignored, byte offset in errors."""
    data = text.replace("\r", "").replace("\n", "").encode("utf-8", "surrogateescape")
    for i, b in enumerate(data):
        if b == ord("="):
            rest = data[i:]
            if (i % 4) < 2 or rest.strip(b"=") or len(data) % 4 or len(rest) > 2:
                raise TokenError(f"failed to decode token: illegal base64 data at input byte {i}")
            break
        if b not in _B64:
            raise TokenError(f"failed to decode token: illegal base64 data at input byte {i}")
    if len(data) % 4:
        raise TokenError(
            f"failed to decode token: illegal base64 data at input byte {len(data) - len(data) % 4}"
        )
    return base64.b64decode(data)


def _valid_addr(addr: str) -> bool:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        return False
    if host.startswith("["):
        if not host.endswith("]"):
            return False
    elif ":" in host:
        return False  # IPv6 literals need brackets, as net.SplitHostPort says
    return 1 <= int(port) <= 65535


def decode_token(text: str) -> PeeringToken:
    """Decode and validate a token, raising TokenError with Consul's message."""
    raw = _b64decode(text)
    try:
        doc = go_unmarshal(raw, _TOKEN_SCHEMA, "structs.PeeringToken")
    except GoJSONError as e:
        raise TokenError(str(e)) from None
    tok = PeeringToken(**{k: v for k, v in doc.items() if k != "Remote"})
    tok.Remote = {"Partition": "", "Datacenter": "", "Locality": None, **(doc.get("Remote") or {})}
    for pem in tok.CA or []:
        try:
            x509.load_pem_x509_certificate(pem.encode())
        except ValueError as e:
            raise TokenError(f"peering token invalid CA: {e}") from None
    if not tok.ServerAddresses and not tok.ManualServerAddresses:
        raise TokenError("peering token server addresses value is empty")
    for addr in (tok.ManualServerAddresses or []) + (tok.ServerAddresses or []):
        if not _valid_addr(addr):
            raise TokenError(f"{addr} is not a valid peering server address")
    if tok.CA and not tok.ServerName:
        raise TokenError("peering token server name value is empty")
    if not tok.PeerID:
        raise TokenError("peering token peer ID value is empty")
    return tok
