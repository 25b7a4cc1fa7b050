"""TLS for the peer stream: this server's leaf certificate and the contexts built from it.

The cluster CA lives in Raft (`FSM.identity`); each server derives its own leaf at runtime
(never replicated, never written to the journal) for `server.<dc>.peering.<trust-domain>`,
signed by that CA, and keeps it in memory. A dialer verifies the acceptor against the CA PEMs
of the token and its ServerName, exactly as Consul's peer stream does.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .identity import server_name

LEAF_LIFETIME = datetime.timedelta(days=3)
LEAF_RENEW_BEFORE = datetime.timedelta(days=1)


def issue_leaf(
    ca_cert_pem: str, ca_key_pem: str, dns_name: str, now: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """A fresh key and a leaf certificate for `dns_name` signed by the CA (PEM bytes)."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl can only load a chain from files: write it to a private temp dir for the moment of
    # loading (the key never outlives this call on disk).
    with tempfile.TemporaryDirectory(prefix="peerplane-leaf-") as tmp:
        path = os.path.join(tmp, "leaf.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem + key_pem)
        ctx.load_cert_chain(path)
    return ctx


class LeafCerts:
    """This server's peering leaf, derived from the replicated CA on first use and cached.

    `identity` returns the FSM's identity dict (or None before the first leader created it).
    The listener's context is a shell whose SNI callback swaps in the leaf's context, so the
    listener can start before the CA exists and picks up a new CA without a restart.
    """

    def __init__(self, identity: Callable[[], dict[str, str] | None], datacenter: str) -> None:
        self._identity = identity
        self.datacenter = datacenter
        self._cached: tuple[str, datetime.datetime, ssl.SSLContext, bytes] | None = None

    def server_name(self) -> str | None:
        ident = self._identity()
        return server_name(self.datacenter, ident["TrustDomain"]) if ident else None

    def leaf_context(self) -> ssl.SSLContext | None:
        ident = self._identity()
        if ident is None:
            return None
        now = datetime.datetime.now(datetime.UTC)
        cached = self._cached
        if cached and cached[0] == ident["CACert"] and cached[1] - now > LEAF_RENEW_BEFORE:
            return cached[2]
        cert, key = issue_leaf(
            ident["CACert"], ident["CAKey"], server_name(self.datacenter, ident["TrustDomain"]),
            now,
        )
        ctx = _server_context(cert, key)
        self._cached = (ident["CACert"], now + LEAF_LIFETIME, ctx, cert)
        return ctx

    def listener_context(self) -> ssl.SSLContext:
        shell = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        shell.minimum_version = ssl.TLSVersion.TLSv1_2

        def pick(sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> int | None:
            try:
                leaf = self.leaf_context()
            except Exception:  # noqa: BLE001 - a handshake must fail, not the server
                leaf = None
            if leaf is None:
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
            sslobj.context = leaf
            return None

        shell.sni_callback = pick
        return shell


def client_context(ca_pems: list[str]) -> ssl.SSLContext:
    """Verify a peer against the CA PEMs of its token (hostname checked against ServerName)."""
    # PROTOCOL_TLS_CLIENT verifies the chain and the hostname; with no CA nothing is trusted
    # and every handshake fails with a clear verify error (we never dial without TLS).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pems:
        ctx.load_verify_locations(cadata="".join(ca_pems))
    return ctx
