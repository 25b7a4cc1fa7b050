"""The HTTP API over TLS, Consul's way: `peerplane tls` makes the CA and certificates, servers
listen with `--https-port` (plain HTTP off here, so HTTPS is the only way in or between them),
require client certificates (`verify_incoming`), and forward to the leader over HTTPS. Clients
are curl and the `peerplane` CLI with Consul's variables (CONSUL_HTTP_ADDR=https://…,
CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY, CONSUL_HTTP_SSL_VERIFY)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from lab.cluster import Agent, LocalCluster, eventually, free_ports

pytestmark = pytest.mark.integration

CA, CA_KEY = "consul-agent-ca.pem", "consul-agent-ca-key.pem"
SERVER, SERVER_KEY = "dc1-server-consul-0.pem", "dc1-server-consul-0-key.pem"
CLI, CLI_KEY = "dc1-cli-consul-0.pem", "dc1-cli-consul-0-key.pem"
UNKNOWN_CA = "tls: failed to verify certificate: x509: certificate signed by unknown authority"


def pp(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
       ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "PEERPLANE_"))}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "peerplane_cli", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, timeout=60)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate and a CLI certificate, as a user makes them; and a second,
    unrelated CA in pki/other."""
    d = tmp_path_factory.mktemp("pki")
    ok(pp("tls", "ca", "create", cwd=d))
    ok(pp("tls", "cert", "create", "-server", "-dc", "dc1", cwd=d))
    ok(pp("tls", "cert", "create", "-cli", "-dc", "dc1", cwd=d))
    (d / "other").mkdir()
    ok(pp("tls", "ca", "create", cwd=d / "other"))
    return d


def https_args(pki: Path, https_port: int) -> list[str]:
    return ["--http-port=-1", "--https-port", str(https_port),
            "--tls-cert-file", str(pki / SERVER), "--tls-key-file", str(pki / SERVER_KEY),
            "--tls-ca-file", str(pki / CA), "--tls-verify-incoming"]


def client_context(pki: Path, ca: Path | None = None, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or pki / CA))
    if cert:
        ctx.load_cert_chain(str(pki / CLI), str(pki / CLI_KEY))
    return ctx


def https(agent: Agent, method: str, path: str, ctx: ssl.SSLContext, body: Any = None,
          ) -> tuple[int, Any]:
    port = agent.https_port  # type: ignore[attr-defined]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            payload = resp.read()
            return resp.status, json.loads(payload) if payload.strip() else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def cluster(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(str(tmp_path_factory.mktemp("https")), datacenter="dc1")
    for agent, port in zip(c.agents, free_ports(len(c.agents)), strict=True):
        agent.https_port = port  # type: ignore[attr-defined]
        agent.extra_args += https_args(pki, port)
    try:
        for a in c.agents:
            a.start()
        for a in c.agents:
            a.wait_ready()
        ctx = client_context(pki)

        def one_leader() -> str:
            leaders = {https(a, "GET", "/v1/status/leader", ctx)[1] for a in c.agents}
            assert len(leaders) == 1 and "" not in leaders, leaders
            return leaders.pop()

        leader = eventually(one_leader, 30, 0.2)

        def registered() -> bool:  # every server's HTTPS address is in the membership table
            status, members = https(c.agents[0], "GET", "/v1/agent/members", ctx)
            assert status == 200 and len(members) == 3, members
            assert all(m["Tags"]["https_addr"] for m in members), members
            return True

        eventually(registered, 30, 0.2)
        c.leader_addr = leader  # type: ignore[attr-defined]
        yield c
    finally:
        c.stop()


def followers(c: LocalCluster) -> list[Agent]:
    return [a for a in c.agents if a.raft_addr != c.leader_addr]  # type: ignore[attr-defined]


def addr(agent: Agent) -> str:
    return f"https://127.0.0.1:{agent.https_port}"  # type: ignore[attr-defined]


# ---- peerplane tls ----


def test_tls_ca_create_saves_consul_named_files(tmp_path: Path) -> None:
    proc = pp("tls", "ca", "create", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == \
        (0, f"==> Saved {CA}\n==> Saved {CA_KEY}\n", "")
    assert stat.S_IMODE((tmp_path / CA_KEY).stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((tmp_path / CA).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = pp("tls", "ca", "create", cwd=tmp_path)
    assert (again.returncode, again.stderr) == (1, f"{CA} already exists.\n")


def test_tls_cert_create_server_names_the_server_and_counts_up(tmp_path: Path) -> None:
    ok(pp("tls", "ca", "create", cwd=tmp_path))
    proc = pp("tls", "cert", "create", "-server", "-dc", "dc2",
              "-additional-dnsname", "peerplane.example", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("==> WARNING: Server Certificates grants authority")
    assert proc.stdout.endswith(f"==> Using {CA} and {CA_KEY}\n==> Saved dc2-server-consul-0.pem"
                                f"\n==> Saved dc2-server-consul-0-key.pem\n")
    cert = x509.load_pem_x509_certificate((tmp_path / "dc2-server-consul-0.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == \
        ["server.dc2.consul", "localhost", "peerplane.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ok(pp("tls", "cert", "create", "-server", "-dc", "dc2", cwd=tmp_path))
    assert (tmp_path / "dc2-server-consul-1.pem").exists()


def test_tls_cert_create_needs_a_kind_and_the_ca(tmp_path: Path) -> None:
    proc = pp("tls", "cert", "create", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == \
        (1, "Please provide either -server, -client, or -cli\n")
    proc = pp("tls", "cert", "create", "-server", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error reading CA: [Errno 2] No such file or directory: '{CA}'")


# ---- the agent over HTTPS ----


def test_curl_with_the_ca_and_a_client_certificate_reads_over_https(
    pki: Path, cluster: LocalCluster
) -> None:
    a = cluster.agents[0]
    proc = subprocess.run(
        ["curl", "-sS", "--cacert", str(pki / CA), "--cert", str(pki / CLI),
         "--key", str(pki / CLI_KEY), f"{addr(a)}/v1/status/leader"],
        capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout) == cluster.leader_addr  # type: ignore[attr-defined]


def test_curl_with_another_ca_fails_verification(pki: Path, cluster: LocalCluster) -> None:
    proc = subprocess.run(
        ["curl", "-sS", "--cacert", str(pki / "other" / CA), "--cert", str(pki / CLI),
         "--key", str(pki / CLI_KEY), f"{addr(cluster.agents[0])}/v1/status/leader"],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 60  # CURLE_PEER_FAILED_VERIFICATION
    # The server sends its chain up to its CA, which the other CA does not vouch for.
    assert "SSL certificate problem: self-signed certificate in certificate chain" in \
        proc.stderr, proc.stderr


def test_curl_without_a_client_certificate_is_refused(pki: Path, cluster: LocalCluster) -> None:
    proc = subprocess.run(
        ["curl", "-sS", "--cacert", str(pki / CA), f"{addr(cluster.agents[0])}/v1/status/leader"],
        capture_output=True, text=True, timeout=30)
    # The server closes the connection (asyncio sends no TLS alert): curl sees no answer.
    # 52: empty reply; 35/56: the close seen during the handshake or the first read.
    assert proc.returncode in (35, 52, 56) and proc.stdout == "", proc.stderr


def test_plain_http_is_off(cluster: LocalCluster) -> None:
    with pytest.raises(OSError):
        urllib.request.urlopen(cluster.agents[0].url("/v1/status/leader"), timeout=3)


def test_writes_through_followers_commit_and_are_read_everywhere_over_https(
    pki: Path, cluster: LocalCluster
) -> None:
    ctx = client_context(pki)
    for f in followers(cluster):
        status, body = https(f, "POST", "/v1/peering/token", ctx, {"PeerName": f"via-{f.name}"})
        assert status == 200, body
        assert body["PeeringToken"]
    for f in followers(cluster):
        for a in cluster.agents:
            status, rec = https(a, "GET", f"/v1/peering/via-{f.name}?consistent", ctx)
            assert (status, rec["State"]) == (200, "PENDING"), (a.name, rec)


def test_cli_over_https_with_consul_variables(pki: Path, cluster: LocalCluster) -> None:
    a = followers(cluster)[0]
    env = {"CONSUL_HTTP_ADDR": addr(a), "CONSUL_CACERT": str(pki / CA),
           "CONSUL_CLIENT_CERT": str(pki / CLI), "CONSUL_CLIENT_KEY": str(pki / CLI_KEY)}
    token = ok(pp("peering", "generate-token", "-name", "cli-https", env=env)).strip()
    assert json.loads(__import__("base64").b64decode(token))["PeerID"]
    listed = ok(pp("peering", "list", "-format=json", env=env))
    assert "cli-https" in {p["Name"] for p in json.loads(listed)}


def test_cli_tls_flags_work_like_the_variables(pki: Path, cluster: LocalCluster) -> None:
    a = cluster.agents[0]
    out = ok(pp("operator", "raft", "list-peers", "-http-addr", addr(a),
                "-ca-file", str(pki / CA), "-client-cert", str(pki / CLI),
                "-client-key", str(pki / CLI_KEY)))
    assert out.count("\n") == 4, out  # header + three servers


def test_cli_with_another_ca_fails_with_a_clear_error(pki: Path, cluster: LocalCluster) -> None:
    a = cluster.agents[0]
    env = {"CONSUL_HTTP_ADDR": addr(a), "CONSUL_CACERT": str(pki / "other" / CA),
           "CONSUL_CLIENT_CERT": str(pki / CLI), "CONSUL_CLIENT_KEY": str(pki / CLI_KEY)}
    proc = pp("peering", "list", env=env)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == \
        f'Error listing peerings: Get "{addr(a)}/v1/peerings": {UNKNOWN_CA}\n'


def test_cli_without_a_client_certificate_is_refused(pki: Path, cluster: LocalCluster) -> None:
    a = cluster.agents[0]
    proc = pp("peering", "list", env={"CONSUL_HTTP_ADDR": addr(a),
                                      "CONSUL_CACERT": str(pki / CA)})
    assert proc.returncode == 1
    assert proc.stderr == f'Error listing peerings: Get "{addr(a)}/v1/peerings": the server ' \
        "closed the TLS connection without an answer; it may require a client certificate " \
        "(-client-cert/-client-key, CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY)\n"


def test_cli_ssl_verify_false_skips_server_verification(pki: Path, cluster: LocalCluster) -> None:
    env = {"CONSUL_HTTP_ADDR": addr(cluster.agents[0]), "CONSUL_HTTP_SSL_VERIFY": "false",
           "CONSUL_CLIENT_CERT": str(pki / CLI), "CONSUL_CLIENT_KEY": str(pki / CLI_KEY)}
    ok(pp("peering", "list", env=env))


def test_the_agent_refuses_unreadable_tls_files_before_starting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    proc = pp("agent", "--data-dir", str(tmp_path / "d"), "--https-port", "1",
              "--tls-cert-file", str(missing), "--tls-key-file", str(missing))
    assert proc.returncode == 1
    assert proc.stderr == f"peerplane agent: tls: cannot load certificate {missing} with key " \
                          f"{missing}: [Errno 2] No such file or directory\n"
    assert not (tmp_path / "d").exists()


def test_curl_is_installed() -> None:
    assert shutil.which("curl"), "curl is needed (installed by .ci/run)"


def test_a_leader_certificate_the_follower_does_not_trust_is_named_in_its_log(
    pki: Path, tmp_path: Path
) -> None:
    """Every server trusts only the *other* CA: nobody can forward. A request the leader must
    serve (removing a Raft peer), sent to a follower, ends in 503 after the hold time, and the
    follower's log says why (not just "no leader")."""
    c = LocalCluster(str(tmp_path / "c"), datacenter="dc1")
    for agent, port in zip(c.agents, free_ports(len(c.agents)), strict=True):
        agent.https_port = port  # type: ignore[attr-defined]
        agent.extra_args += [
            "--https-port", str(port), "--tls-cert-file", str(pki / SERVER),
            "--tls-key-file", str(pki / SERVER_KEY), "--tls-ca-file", str(pki / "other" / CA)]
    with c:
        leader = c.leader()
        follower = next(a for a in c.agents if a is not leader)
        ctx = client_context(pki, cert=False)

        def registered() -> bool:  # the follower knows the leader's HTTPS address
            status, members = https(follower, "GET", "/v1/agent/members?stale", ctx)
            assert status == 200 and all(m["Tags"]["https_addr"] for m in members), members
            return True

        eventually(registered, 30, 0.2)
        remove = "/v1/operator/raft/peer?address=127.0.0.1:1"
        status, body = https(follower, "DELETE", remove, ctx)
        assert (status, body) == (503, "No cluster leader")
        assert any("cannot forward to the leader at https://127.0.0.1:" in line and
                   "its certificate is refused" in line for line in follower.log_lines)
        status, body = https(leader, "DELETE", remove, ctx)
        assert (status, body) == (400, 'address "127.0.0.1:1" was not found in the Raft '
                                       "configuration")


def test_cli_tls_server_name_is_the_name_verified(pki: Path, cluster: LocalCluster) -> None:
    a = cluster.agents[0]
    env = {"CONSUL_HTTP_ADDR": addr(a), "CONSUL_CACERT": str(pki / CA),
           "CONSUL_CLIENT_CERT": str(pki / CLI), "CONSUL_CLIENT_KEY": str(pki / CLI_KEY)}
    ok(pp("peering", "list", env={**env, "CONSUL_TLS_SERVER_NAME": "server.dc1.consul"}))
    proc = pp("peering", "list", "-tls-server-name", "wrong.example", env=env)
    assert proc.returncode == 1
    assert proc.stderr == f'Error listing peerings: Get "{addr(a)}/v1/peerings": tls: failed ' \
        "to verify certificate: Hostname mismatch, certificate is not valid for " \
        "'wrong.example'.\n"
