"""The peering token: base64 of JSON, exactly the fields and error texts of Consul."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography import x509

from ..gojson import GoJSONError, go_unmarshal

_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


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
        try:  # orjson writes ASCII-only documents as json.dumps does, ~4x faster
            data = orjson.dumps(doc)
        except TypeError:  # unpaired surrogates
            data = b"\x80"
        if not data.isascii() or b"\x7f" in data:  # json.dumps escapes these (\uXXXX)
            data = json.dumps(doc, separators=(",", ":")).encode()
        return base64.b64encode(data).decode()


_TOKEN_SCHEMA = {
    "CA": "[]string",
    "ManualServerAddresses": "[]string",
    "ServerAddresses": "[]string",
    "ServerName": "string",
    "PeerID": "string",
    "EstablishmentSecret": "string",
    "Remote": {
        "Partition": "string",
        "Datacenter": "string",
        "Locality": {"Region": "string", "Zone": "string"},  # *structs.Locality
    },
}


def _bad_base64(offset: int) -> TokenError:
    return TokenError(f"failed to decode token: illegal base64 data at input byte {offset}")


_PLAIN_B64 = re.compile(r"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_NEWLINE = frozenset(b"\r\n")


def _b64decode(text: str) -> bytes:
    """Go's base64.StdEncoding.DecodeString (a port of decodeQuantum): padding required,
    '\\r' and '\\n' skipped, errors at Go's byte offset in the input as given."""
    if len(text) % 4 == 0 and _PLAIN_B64.fullmatch(text):
        return binascii.a2b_base64(text.encode())
    src = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    si = 0
    while True:
        quantum = bytearray()
        while len(quantum) < 4:
            if si == len(src):
                if not quantum:
                    return bytes(out)
                raise _bad_base64(si - len(quantum))
            c = src[si]
            si += 1
            if c in _B64:
                quantum.append(c)
                continue
            if c in _NEWLINE:
                continue
            if c != 0x3D or len(quantum) < 2:  # not '=', or padding too early
                raise _bad_base64(si - 1)
            if len(quantum) == 2:  # "==" expected, the first '=' is consumed
                while si < len(src) and src[si] in _NEWLINE:
                    si += 1
                if si == len(src):
                    raise _bad_base64(len(src))
                if src[si] != 0x3D:
                    raise _bad_base64(si - 1)
                si += 1
            while si < len(src) and src[si] in _NEWLINE:
                si += 1
            if si < len(src):
                raise _bad_base64(si)  # trailing garbage after the padding
            out += binascii.a2b_base64(bytes(quantum) + b"=" * (4 - len(quantum)))
            return bytes(out)
        out += binascii.a2b_base64(bytes(quantum))


_PORT = re.compile(r"[+-]?[0-9]+")


def _valid_addr(addr: str) -> bool:
    """Consul's check: net.SplitHostPort succeeds and strconv.Atoi(port) is in 1..65535."""
    i = addr.rfind(":")
    if i < 0:
        return False  # missing port in address
    j = k = 0
    if addr.startswith("["):
        end = addr.find("]")
        if end + 1 != i:
            return False  # missing ']', missing port, or too many colons
        j, k = 1, end + 1
    elif ":" in addr[:i]:
        return False  # too many colons in address
    if "[" in addr[j:] or "]" in addr[k:]:
        return False
    port = addr[i + 1 :]
    if not _PORT.fullmatch(port):
        return False
    digits = port.lstrip("+-").lstrip("0")
    if len(digits) > 5:
        return False
    value = int(digits or "0")
    return 1 <= (-value if port.startswith("-") else value) <= 65535


_PEM_BEGIN = re.compile(r"-----BEGIN ([^\n]*)-----")


def _ca_problem(pem: str) -> str | None:
    """connect.ParseCert: the first PEM block must be a parsable CERTIFICATE."""
    begin = _PEM_BEGIN.search(pem)
    if begin is None:
        return "no PEM-encoded data found"
    if begin.group(1) != "CERTIFICATE":
        return "first PEM-block should be CERTIFICATE type"
    try:
        x509.load_pem_x509_certificate(pem.encode("utf-8", "surrogatepass"))
    except Exception as e:  # noqa: BLE001 - any refusal is the token's fault
        return str(e) or type(e).__name__
    return None


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
        if (problem := _ca_problem(pem)) is not None:
            raise TokenError(f"peering token invalid CA: {problem}")
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
