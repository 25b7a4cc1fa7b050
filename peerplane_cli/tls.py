"""`peerplane tls ca create` / `peerplane tls cert create`: a CA and agent certificates for the
HTTPS API of a dev or compose setup, with `consul tls`'s flags, file names and output.

Files land in the current directory: `<domain>-agent-ca.pem` (+ `-key.pem`) for the CA, and
`<dc>-<server|client|cli>-<domain>-<N>.pem` (+ `-key.pem`, N the first free number) for a
certificate. Keys are ECDSA P-256 (as Consul's); key files are written mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from .client import CommandError, FlagSet

_SERVER_WARNING = (
    "==> WARNING: Server Certificates grants authority to become a\n"
    "    server and access all state in the cluster including root keys\n"
    "    and all ACL tokens. Do not distribute them to production hosts\n"
    "    that are not server nodes. Store them as securely as CA keys."
)


def _write(path: str, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    print(f"==> Saved {path}", flush=True)


def _key_and_builder(common_name: str, days: int):  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    return key, builder


def _pem(key, cert) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization

    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def _days(fs: FlagSet) -> int:
    try:
        days = int(fs["days"])
    except ValueError:
        raise CommandError(f'invalid value "{fs["days"]}" for flag -days: parse error') from None
    if days < 1:
        raise CommandError("Please provide a positive number of -days")
    return days


def ca_create(args: list[str]) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    fs = FlagSet("peerplane tls ca create [options]\n\n  Create a new certificate authority.")
    fs.string("days", "1825", "Provide number of days the CA is valid for from now on. "
              "Defaults to 5 years.")
    fs.string("domain", "consul", "Domain of the cluster; names the files. Defaults to "
              "consul.")
    fs.string("common-name", "", "Common Name of CA. Defaults to Consul Agent CA.")
    fs.parse(args)
    domain = fs["domain"]
    cert_path, key_path = f"{domain}-agent-ca.pem", f"{domain}-agent-ca-key.pem"
    for path in (cert_path, key_path):
        if os.path.exists(path):
            raise CommandError(f"{path} already exists.")
    common_name = fs["common-name"] or f"Consul Agent CA {x509.random_serial_number()}"
    key, builder = _key_and_builder(common_name, _days(fs))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (builder.issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = _pem(key, cert)
    _write(cert_path, cert_pem, private=False)
    _write(key_path, key_pem, private=True)
    return 0


def cert_create(args: list[str]) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    fs = FlagSet("peerplane tls cert create [options]\n\n  Create a new certificate signed "
                 "by the CA of -ca and -key.")
    fs.string("ca", "#DOMAIN#-agent-ca.pem", "Provide path to the ca. Defaults to "
              "#DOMAIN#-agent-ca.pem.")
    fs.string("key", "#DOMAIN#-agent-ca-key.pem", "Provide path to the key. Defaults to "
              "#DOMAIN#-agent-ca-key.pem.")
    fs.boolean("server", "Generate server certificate.")
    fs.boolean("client", "Generate client certificate.")
    fs.boolean("cli", "Generate cli certificate.")
    fs.string("days", "365", "Provide number of days the certificate is valid for from now "
              "on. Defaults to 1 year.")
    fs.string("dc", "dc1", "Provide the datacenter. Matters only for -server certificates.")
    fs.string("domain", "consul", "Provide the domain. Matters only for -server certificates.")
    fs.string("node", "", "When generating a server cert and this is set an additional dns "
              "name is included of the form <node>.server.<datacenter>.<domain>.")
    fs.strings("additional-dnsname", "Provide an additional dnsname for Subject Alternative "
               "Names. localhost is always included. This flag may be provided multiple times.")
    fs.strings("additional-ipaddress", "Provide an additional ipaddress for Subject Alternative "
               "Names. 127.0.0.1 is always included. This flag may be provided multiple times.")
    fs.parse(args)
    kinds = [k for k in ("server", "client", "cli") if fs[k]]
    if len(kinds) != 1:
        raise CommandError("Please provide either -server, -client, or -cli")
    kind, dc, domain = kinds[0], fs["dc"], fs["domain"]
    if fs["node"] and kind != "server":
        raise CommandError("-node requires -server")
    ca_path = fs["ca"].replace("#DOMAIN#", domain)
    key_path = fs["key"].replace("#DOMAIN#", domain)
    try:
        with open(ca_path, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as e:
        raise CommandError(f"Error reading CA: {e}") from None
    except ValueError as e:
        raise CommandError(f"Error parsing CA: {e}") from None
    name = {"server": f"server.{dc}.{domain}", "client": f"client.{dc}.{domain}",
            "cli": f"cli.client.{dc}.{domain}"}[kind]
    dns = [name, "localhost"] if kind != "cli" else [name]
    if fs["node"]:
        dns.append(f"{fs['node']}.server.{dc}.{domain}")
    dns += fs["additional-dnsname"]
    try:
        ips = [ipaddress.ip_address(a) for a in ["127.0.0.1", *fs["additional-ipaddress"]]]
    except ValueError as e:
        raise CommandError(f"Error parsing -additional-ipaddress: {e}") from None
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind != "cli":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    key, builder = _key_and_builder(name, _days(fs))
    cert = (builder.issuer_name(ca_cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(d) for d in dict.fromkeys(dns)] +
                [x509.IPAddress(i) for i in dict.fromkeys(ips)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    prefix = f"{dc}-{kind}-{domain}"
    n = 0
    while os.path.exists(f"{prefix}-{n}.pem") or os.path.exists(f"{prefix}-{n}-key.pem"):
        n += 1
    if kind == "server":
        print(_SERVER_WARNING, flush=True)
    print(f"==> Using {ca_path} and {key_path}", flush=True)
    cert_pem, key_pem = _pem(key, cert)
    _write(f"{prefix}-{n}.pem", cert_pem, private=False)
    _write(f"{prefix}-{n}-key.pem", key_pem, private=True)
    return 0
