"""Cluster identity: the trust domain and CA every server of a cluster shares.

Created once by the first leader, before submission (keys are random), and stored in Raft.
"""

from __future__ import annotations

import datetime
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def new_identity(now: datetime.datetime | None = None) -> dict[str, str]:
    """A fresh trust domain and self-signed CA (PEM strings), ready for `init_identity`."""
    now = now or datetime.datetime.now(datetime.UTC)
    trust_domain = f"{uuid.uuid4()}.consul"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"peerplane CA {trust_domain}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return {
        "TrustDomain": trust_domain,
        "CACert": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "CAKey": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }


def server_name(datacenter: str, trust_domain: str) -> str:
    """Consul's PeeringServerSAN: the TLS name peers verify this cluster's servers against."""
    return f"server.{datacenter}.peering.{trust_domain}"
