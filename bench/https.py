"""What TLS costs on the HTTP API: one request's latency over HTTP and HTTPS on the same server.

A real three-server cluster on 127.0.0.1 serving HTTP and HTTPS side by side (a CA and server
certificate made with `peerplane tls`, client certificates required). Sequential requests, one
at a time, from this process (Python's http.client):
  - GET /v1/status/leader on a kept-alive connection (HTTP, HTTPS): the per-request cost;
  - the same with a new connection per request (HTTP, HTTPS): adds the TCP (+ TLS) handshake;
  - POST /v1/peering/token through a follower, asked over HTTP or HTTPS; either way the
    follower forwards it to the leader over HTTPS (servers with TLS configured always do).

    python bench/https.py [--requests 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

from _cluster import LocalCluster, machine

from lab.cluster import free_ports


def pki(d: str) -> None:
    for args in (["ca", "create"], ["cert", "create", "-server"], ["cert", "create", "-cli"]):
        subprocess.run([sys.executable, "-m", "peerplane_cli", "tls", *args], cwd=d, check=True,
                       capture_output=True)


def timed(make, method: str, path: str, n: int, reuse: bool, body=None) -> list[float]:
    out, conn = [], make()
    for i in range(n):
        if not reuse:
            conn = make()
        data = json.dumps(body(i)).encode() if body else None
        start = time.perf_counter()
        conn.request(method, path, body=data)
        resp = conn.getresponse()
        resp.read()
        out.append((time.perf_counter() - start) * 1000)
        assert resp.status == 200, resp.status
        if not reuse:
            conn.close()
    return out


def row(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"| {name} | {statistics.median(ms):.2f} ms | {q[89]:.2f} ms | {q[98]:.2f} ms |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    n = ap.parse_args().requests
    with tempfile.TemporaryDirectory() as d:
        pki(d)
        c = LocalCluster(os.path.join(d, "c"))
        ports = free_ports(len(c.agents))
        for a, port in zip(c.agents, ports, strict=True):
            a.extra_args += [
                "--https-port", str(port), "--tls-cert-file", f"{d}/dc1-server-consul-0.pem",
                "--tls-key-file", f"{d}/dc1-server-consul-0-key.pem",
                "--tls-ca-file", f"{d}/consul-agent-ca.pem", "--tls-verify-incoming"]
        ctx = ssl.create_default_context(cafile=f"{d}/consul-agent-ca.pem")
        ctx.load_cert_chain(f"{d}/dc1-cli-consul-0.pem", f"{d}/dc1-cli-consul-0-key.pem")
        with c:
            leader = c.leader()
            follower = c.followers()[0]
            https_port = {a.name: p for a, p in zip(c.agents, ports, strict=True)}

            def plain(a=leader):
                return http.client.HTTPConnection("127.0.0.1", a.http_port, timeout=30)

            def tls(a=leader):
                return http.client.HTTPSConnection("127.0.0.1", https_port[a.name],
                                                   context=ctx, timeout=30)

            rows = [
                row("HTTP, kept-alive connection", timed(plain, "GET", "/v1/status/leader", n,
                                                         True)),
                row("HTTPS, kept-alive connection", timed(tls, "GET", "/v1/status/leader", n,
                                                          True)),
                row("HTTP, new connection each", timed(plain, "GET", "/v1/status/leader", n,
                                                       False)),
                row("HTTPS, new connection each (TLS 1.3 handshake, client cert)",
                    timed(tls, "GET", "/v1/status/leader", n, False)),
                row("write via a follower asked over HTTP (forwarded over HTTPS)",
                    timed(lambda: plain(follower), "POST", "/v1/peering/token", n // 3, True,
                          lambda i: {"PeerName": f"h-{i}"})),
                row("write via a follower asked over HTTPS (forwarded over HTTPS)",
                    timed(lambda: tls(follower), "POST", "/v1/peering/token", n // 3, True,
                          lambda i: {"PeerName": f"s-{i}"})),
            ]
    print(f"{n} sequential requests each ({n // 3} writes); {machine()}")
    print("| | p50 | p90 | p99 |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
