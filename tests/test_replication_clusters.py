"""Issue 14 acceptance (replication): two real three-server clusters exchange services.

dc1 generates the token for its peering `dc2` (acceptor); dc2 establishes it as `dc1` (dialer).
Services registered on dc1 and exported to `dc2` appear on every dc2 server under `?peer=dc1`,
in every read mode; changes, unexports, failovers and deletion follow. Stream timings are fast
(lab/peering.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

import aiohttp
import msgpack
import pytest

from cluster.peering import resources as r
from lab.cluster import LocalCluster, eventually, free_ports
from lab.peering import decode, establish, peering, token, wait_state

pytestmark = pytest.mark.integration

MODES = ("", "&stale", "&consistent")


@pytest.fixture(scope="module")
def peered(dc1, dc2):
    """dc1 knows the peering as `dc2`, dc2 as `dc1`."""
    reply = establish(dc2, "dc1", token(dc1, "dc2"))
    assert reply.status == 200, reply.text
    wait_state(dc1, "dc2", "ACTIVE")
    wait_state(dc2, "dc1", "ACTIVE")
    return dc1, dc2


def put(agent, path: str, body: Any) -> None:
    reply = agent.call("PUT", path, body, timeout=15)
    assert reply.status == 200 and reply.json() is True, (path, reply.status, reply.text)


def register(cluster: LocalCluster, node: str, sid: str, status: str = "passing",
             service: str = "web", port: int = 8080) -> None:
    put(cluster.followers()[0], "/v1/catalog/register", {
        "Node": node, "Address": "10.1.0.7",
        "Service": {"ID": sid, "Service": service, "Port": port, "Tags": ["blue"]},
        "Checks": [{"CheckID": f"{sid}-http", "Name": "http", "Status": status,
                    "ServiceID": sid}],
    })


def export(cluster: LocalCluster, *services: str, to: str = "dc2") -> None:
    put(cluster.followers()[0], "/v1/config", {
        "Kind": "exported-services", "Name": "default",
        "Services": [{"Name": s, "Consumers": [{"Peer": to}]} for s in services],
    })


def health(agent, service: str, query: str = "") -> list[dict[str, Any]]:
    reply = agent.call("GET", f"/v1/health/service/{service}?peer=dc1{query}", timeout=15)
    assert reply.status == 200, reply.text
    return reply.json()


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return sorted(e["Service"]["ID"] for e in entries)


def everywhere(cluster: LocalCluster, service: str, want: list[str], query: str = "",
               timeout: float = 20.0) -> None:
    """Every server of `cluster` serves exactly `want` under ?peer=dc1, in every read mode."""
    for agent, mode in itertools.product(cluster.agents, MODES):
        eventually(lambda a=agent, m=mode: ids(health(a, service, query + m)) == want,
                   timeout, 0.05)


def test_an_exported_service_is_seen_on_every_server_in_every_read_mode(peered):
    dc1, dc2 = peered
    register(dc1, "node-1", "web-1")
    export(dc1, "web")
    everywhere(dc2, "web", ["web-1"])
    [entry] = health(dc2.agents[2], "web", "&stale")
    assert entry["Node"]["PeerName"] == "dc1" and entry["Service"]["PeerName"] == "dc1"
    assert [(c["CheckID"], c["Status"], c["PeerName"]) for c in entry["Checks"]] == [
        ("web-1:overall-check", "passing", "dc1")]
    assert entry["Service"]["Port"] == 8080 and entry["Service"]["Tags"] == ["blue"]
    for agent in dc2.agents:
        rows = agent.call("GET", "/v1/catalog/service/web?peer=dc1&stale").json()
        assert [r["ServiceID"] for r in rows] == ["web-1"]
        assert agent.call("GET", "/v1/health/service/web?stale").json() == []  # not local


def test_instances_checks_deregistration_and_unexport_propagate(peered):
    dc1, dc2 = peered
    register(dc1, "node-1", "web-1")
    export(dc1, "web")
    register(dc1, "node-2", "web-2")
    everywhere(dc2, "web", ["web-1", "web-2"])
    register(dc1, "node-2", "web-2", status="critical")
    everywhere(dc2, "web", ["web-1"], query="&passing")
    everywhere(dc2, "web", ["web-1", "web-2"])
    put(dc1.followers()[0], "/v1/catalog/deregister", {"Node": "node-1", "ServiceID": "web-1"})
    everywhere(dc2, "web", ["web-2"])
    register(dc1, "node-3", "api-1", service="api")
    export(dc1, "api")  # web is no longer exported
    everywhere(dc2, "web", [])
    everywhere(dc2, "api", ["api-1"])


def test_the_peering_read_shows_what_flows_and_how_fresh_it_is(peered):
    dc1, dc2 = peered
    register(dc1, "node-3", "api-1", service="api")
    export(dc1, "api")

    def status(cluster: LocalCluster, name: str) -> dict[str, Any]:
        return peering(cluster.leader(), name)["StreamStatus"]

    eventually(lambda: status(dc2, "dc1")["ImportedServices"] == ["api"], 20, 0.05)
    eventually(lambda: status(dc1, "dc2")["ExportedServices"] == ["api"], 20, 0.05)
    imported, exported = status(dc2, "dc1"), status(dc1, "dc2")
    assert imported["ImportLastApplied"].endswith("Z") and imported["ImportPending"] == 0
    eventually(lambda: status(dc1, "dc2")["ExportUnacked"] == 0, 20, 0.05)
    assert exported["ExportedServices"] == ["api"]

    def metrics() -> str:
        return dc2.leader().call("GET", "/v1/agent/metrics?format=prometheus").text

    eventually(lambda: 'peerplane_peering_import_pending{peer="dc1"} 0.0' in metrics(), 20)
    text = metrics()
    assert 'peerplane_peering_imported_services{peer="dc1"} 1.0' in text
    assert 'peerplane_peering_import_last_applied_age_seconds{peer="dc1"}' in text
    assert 'peerplane_peering_export_unacked{peer="dc1"} 0.0' in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    script = os.path.join(os.path.dirname(sys.executable), "peerplane")
    for cluster, name, counts in ((dc2, "dc1", ("1", "0")), (dc1, "dc2", ("0", "1"))):
        out = subprocess.run([script, "peering", "read", "-name", name], capture_output=True,
                             text=True, timeout=60, check=True,
                             env=dict(env, CONSUL_HTTP_ADDR=cluster.leader().http_addr)).stdout
        assert f"Imported Services: {counts[0]}\n" in out, out
        assert f"Exported Services: {counts[1]}\n" in out, out
        assert "Import Pending:      0\n" in out and "Last Import Applied: " in out, out


class Writer:
    """Registers (and deregisters) instances of `web` on dc1 in the background, through any
    running server; remembers nothing - the truth is read back from dc1 afterwards."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            body: dict[str, Any] = {
                "Node": f"churn-{i % 7}", "Address": "10.2.0.1",
                "Service": {"ID": f"web-c{i % 11}", "Service": "web", "Port": 9000 + i % 11},
            }
            path = "/v1/catalog/register"
            if i % 5 == 4:
                path, body = "/v1/catalog/deregister", {"Node": f"churn-{i % 7}",
                                                         "ServiceID": f"web-c{(i - 1) % 11}"}
            for agent in [a for a in self.cluster.agents if a.running]:
                try:
                    agent.call("PUT", path, body, timeout=5)
                    break
                except OSError:
                    continue
            time.sleep(0.02)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def local_web(cluster: LocalCluster) -> list[tuple[str, str, int]]:
    rows = cluster.leader().call("GET", "/v1/health/service/web?consistent").json()
    return sorted((e["Node"]["Node"], e["Service"]["ID"], e["Service"]["Port"]) for e in rows)


def imported_web(agent) -> list[tuple[str, str, int]]:
    rows = health(agent, "web", "&stale")
    return sorted((e["Node"]["Node"], e["Service"]["ID"], e["Service"]["Port"]) for e in rows)


@pytest.mark.parametrize("side", ["exporter", "importer"])
def test_leader_kill_9_during_replication_converges(peered, side):
    dc1, dc2 = peered
    export(dc1, "web")
    victim_cluster = dc1 if side == "exporter" else dc2
    with Writer(dc1):
        time.sleep(1.0)
        victim = victim_cluster.leader()
        victim.kill()
        victim_cluster.leader()  # a new one
        time.sleep(1.5)
    want = local_web(dc1)
    assert want  # the writer left instances behind
    for agent in [a for a in dc2.agents if a.running]:
        eventually(lambda a=agent: imported_web(a) == want, 30, 0.1)
    victim.start()
    victim.wait_ready()
    victim_cluster.wait_converged()
    for agent in dc2.agents:
        eventually(lambda a=agent: imported_web(a) == want, 30, 0.1)


def test_the_dialer_follows_the_acceptors_server_addresses(peered):
    """Address rotation: a dc1 server comes back on another peering port; dc1's leader pushes
    its servers' addresses over the stream and dc2's PeerServerAddresses follow (the old one
    goes too, unless dc2's leader has reached dc1 through it: reached addresses are kept, see
    the dialer's set_server_addresses)."""
    dc1, dc2 = peered
    agent = dc1.followers()[0]
    old = f"{agent.host}:{agent.peering_port}"
    assert old in peering(dc2.leader(), "dc1")["PeerServerAddresses"]
    agent.stop()
    agent.peering_port = free_ports(1)[0]
    agent.start()
    agent.wait_ready()
    new = f"{agent.host}:{agent.peering_port}"

    current = {f"{a.host}:{a.peering_port}" for a in dc1.agents}

    def rotated() -> bool:
        addrs = set(peering(dc2.leader(), "dc1")["PeerServerAddresses"])
        assert addrs >= current and addrs - current <= {old}, (old, new, addrs)
        return True

    eventually(rotated, 30, 0.1)
    dc1.wait_converged()


def test_malformed_and_nacked_messages_never_wedge_a_real_stream(dc1):
    """A hand-made dialer (its own TLS websocket, no peerplane behind it) streams to dc1's
    leader: malformed responses get NACKs, unusable frames are ignored, and the next good
    snapshot is imported and served by every dc1 server."""
    doc = decode(token(dc1, "handmade"))
    leader = dc1.leader()
    ctx = ssl.create_default_context(cadata="".join(doc["CA"]))
    base = f"https://{leader.host}:{leader.peering_port}/peerstream/v1"
    good = {"Nodes": [{"Node": {"Node": "far-1", "Address": "192.0.2.1"},
                       "Service": {"ID": "ext-1", "Service": "ext", "Port": 443},
                       "Checks": [{"CheckID": "ext-1:overall-check", "Status": "warning"}]}]}
    sends = [
        r.response("00000001", r.URL_SERVICE, "ext", {"Nodes": "x"}),
        r.response("00000002", "type.example/Nope", "x", {}),
        {"Type": "Response", "ResourceURL": r.URL_SERVICE, "ResourceID": "ext"},  # no nonce
        {"Type": "Request", "ResourceURL": r.URL_SERVICE, "ResponseNonce": "77777777"},
        r.response("00000003", r.URL_SERVICE, "ext", good),
        r.response("00000004", r.URL_SERVICE_LIST, r.LIST_ID, {"Services": ["ext"]}),
    ]

    async def stream() -> dict[str, dict]:
        kw = {"ssl": ctx, "server_hostname": doc["ServerName"]}
        async with aiohttp.ClientSession() as s:
            body = {"PeerID": doc["PeerID"], "EstablishmentSecret": doc["EstablishmentSecret"]}
            async with s.post(f"{base}/exchange-secret", json=body, **kw) as resp:
                secret = (await resp.json())["StreamSecret"]
            async with s.ws_connect(f"{base}/stream", **kw) as ws:
                await ws.send_bytes(msgpack.packb({
                    "Type": "Open", "PeerID": doc["PeerID"], "StreamSecretID": secret,
                    "Remote": {"Partition": "", "Datacenter": "far"}}))
                for frame in sends:
                    await ws.send_bytes(msgpack.packb(frame))
                replies: dict[str, dict] = {}
                while len(replies) < 4:
                    msg = await ws.receive(timeout=20)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    frame = msgpack.unpackb(msg.data)
                    if frame["Type"] == "Heartbeat":
                        await ws.send_bytes(msgpack.packb({"Type": "Heartbeat"}))
                    if frame["Type"] == "Request" and frame.get("ResponseNonce"):
                        replies[frame["ResponseNonce"]] = frame
                for agent in dc1.agents:  # the stream is still up: the import is served
                    eventually(lambda a=agent: [e["Service"]["ID"] for e in a.call(
                        "GET", "/v1/health/service/ext?peer=handmade&stale").json()]
                        == ["ext-1"], 20, 0.05)
                status = peering(dc1.leader(), "handmade")
                await ws.close()
                return {"replies": replies, "status": status}

    out = asyncio.run(stream())
    replies = out["replies"]
    assert replies["00000001"]["Error"]["Code"] == "InvalidArgument"
    assert replies["00000002"]["Error"]["Code"] == "InvalidArgument"
    assert "Error" not in replies["00000003"] and "Error" not in replies["00000004"]
    assert out["status"]["State"] == "ACTIVE"
    ss = out["status"]["StreamStatus"]
    assert ss["ImportedServices"] == ["ext"] and ss["LastRecvError"]
    [entry] = dc1.leader().call("GET", "/v1/health/service/ext?peer=handmade").json()
    assert entry["Checks"][0]["Status"] == "warning" and entry["Node"]["PeerName"] == "handmade"


def test_deleting_the_peering_removes_the_imports_on_every_server(peered):
    """dc2 deletes its peering: dc2 drops what it imported before the record goes; dc1 becomes
    TERMINATED (record kept) and drops what it imported from dc2."""
    dc1, dc2 = peered
    register(dc1, "node-1", "web-1")
    export(dc1, "web")
    register(dc2, "node-9", "db-1", service="db")
    export(dc2, "db", to="dc1")
    eventually(lambda: "web-1" in ids(health(dc2.leader(), "web")), 20, 0.05)

    def db_on_dc1(agent, mode: str = "") -> list[str]:
        reply = agent.call("GET", f"/v1/health/service/db?peer=dc2{mode}", timeout=15)
        assert reply.status == 200, reply.text
        return ids(reply.json())

    eventually(lambda: db_on_dc1(dc1.leader()) == ["db-1"], 20, 0.05)
    assert dc2.agents[0].call("DELETE", "/v1/peering/dc1").status == 200
    wait_state(dc2, "dc1", None)
    wait_state(dc1, "dc2", "TERMINATED")
    for agent, mode in itertools.product(dc2.agents, MODES):
        assert health(agent, "web", mode) == [], (agent.name, mode)
    for agent, mode in itertools.product(dc1.agents, MODES):
        eventually(lambda a=agent, m=mode: db_on_dc1(a, m) == [], 20, 0.05)
