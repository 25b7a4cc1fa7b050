"""Issue 4 acceptance: two real three-server clusters on loopback peer with each other.

dc1 generates tokens (acceptor), dc2 establishes (dialer). Stream timings are fast
(heartbeat 0.5 s, timeout 4 s; see lab/peering.py). Tests use distinct peering names and
leave both clusters whole (every killed server is restarted) for the next test.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time

import aiohttp
import msgpack
import pytest

from cluster.peering.identity import new_identity
from lab.cluster import LocalCluster, eventually
from lab.peering import (
    HEARTBEAT_TIMEOUT,
    decode,
    encode,
    establish,
    peering,
    state,
    token,
    wait_state,
)

pytestmark = pytest.mark.integration

DENIED = "a new peering token must be generated: invalid peering establishment secret"


def listed(cluster: LocalCluster, name: str) -> dict:
    rows = cluster.leader().call("GET", "/v1/peerings").json()
    return next(r for r in rows if r["Name"] == name)


def peer(dc1: LocalCluster, dc2: LocalCluster, name: str) -> None:
    """Establish `name` (dc2 dials dc1) and wait for ACTIVE on both sides; no side may show
    FAILING (or anything else unexpected) on the way."""
    tok = token(dc1, name)
    with StateSampler({"dc1": dc1, "dc2": dc2}, name) as sampler:
        reply = establish(dc2, name, tok)
        assert reply.status == 200, reply.text
        wait_state(dc2, name, "ACTIVE")
        wait_state(dc1, name, "ACTIVE")
    assert sampler.seen["dc1"] <= {"PENDING", "ACTIVE"}, sampler.seen
    assert sampler.seen["dc2"] <= {"PENDING", "ESTABLISHING", "ACTIVE", "TERMINATED"}, sampler.seen


def no_tracebacks(*clusters: LocalCluster) -> None:
    for c in clusters:
        for a in c.agents:
            assert not any("Traceback" in line for line in a.log_lines), "".join(a.log_lines)


class StateSampler:
    """Reads a peering's state on both clusters in the background (a read answered 503 while a
    cluster elects is not a state and is skipped)."""

    def __init__(self, clusters: dict[str, LocalCluster], name: str) -> None:
        self.clusters, self.name = clusters, name
        self.seen: dict[str, set[str]] = {k: set() for k in clusters}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, c in self.clusters.items():
                for a in [a for a in c.agents if a.running]:
                    try:
                        reply = a.call("GET", f"/v1/peering/{self.name}", timeout=10)
                    except OSError:
                        continue
                    if reply.status == 200:
                        self.seen[key].add(reply.json()["State"])
                    break
            time.sleep(0.05)

    def __enter__(self) -> StateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


# ---- the lifecycle (Consul's TestAPI_Peering_GenerateToken_Read_Establish_Delete) ----


def test_generate_token_read_establish_delete(dc1, dc2):
    tok = token(dc1, "peer1", Meta={"foo": "bar"})
    rec = peering(dc1.leader(), "peer1")
    assert rec["State"] == "PENDING" and rec["Meta"] == {"foo": "bar"}

    reply = dc2.agents[0].call("POST", "/v1/peering/establish",
                               {"PeerName": "peer1", "PeeringToken": tok, "Meta": {"foo": "bar"}})
    assert reply.status == 200 and reply.json() == {}, reply.text
    rec = peering(dc2.leader(), "peer1")
    # ESTABLISHING is written by establish; the stream may already be up a few ms later.
    assert rec["State"] in ("ESTABLISHING", "ACTIVE") and rec["Meta"] == {"foo": "bar"}

    wait_state(dc2, "peer1", "ACTIVE")
    wait_state(dc1, "peer1", "ACTIVE")
    assert listed(dc2, "peer1")["State"] == "ACTIVE"
    assert listed(dc1, "peer1")["State"] == "ACTIVE"
    acceptor, dialer = peering(dc1.leader(), "peer1"), peering(dc2.leader(), "peer1")
    assert acceptor["Remote"]["Datacenter"] == "dc2"
    assert dialer["Remote"]["Datacenter"] == "dc1"
    assert dialer["PeerID"] == acceptor["ID"] and "PeerID" not in acceptor
    for rec in (acceptor, dialer):
        ss = rec["StreamStatus"]
        assert ss["ImportedServices"] == [] and ss["ExportedServices"] == []
        assert ss["LastHeartbeat"] and ss["LastReceive"] and ss["LastSend"]
        assert ss["LastHeartbeat"].endswith("Z")
    # heartbeats keep flowing: LastHeartbeat moves on
    first = dialer["StreamStatus"]["LastHeartbeat"]
    eventually(lambda: peering(dc2.leader(), "peer1")["StreamStatus"]["LastHeartbeat"] != first,
               5)

    assert dc1.agents[1].call("DELETE", "/v1/peering/peer1").status == 200
    wait_state(dc2, "peer1", "TERMINATED")
    wait_state(dc1, "peer1", None)
    assert peering(dc2.leader(), "peer1")["StreamStatus"]["LastHeartbeat"] is None
    assert dc2.agents[2].call("DELETE", "/v1/peering/peer1").status == 200
    wait_state(dc2, "peer1", None)
    no_tracebacks(dc1, dc2)


@pytest.mark.parametrize("query", ["", "?consistent"])
def test_a_follower_read_shows_the_leaders_stream_status(dc1, dc2, query):
    """Issue 15: followers serve default and ?consistent reads themselves; the stream status
    (live, on the leader only) comes with the leader's read-index answer."""
    name = f"follower-status{query[1:]}"
    peer(dc1, dc2, name)
    for cluster in (dc1, dc2):
        for follower in cluster.followers():
            reply = follower.call("GET", f"/v1/peering/{name}{query}")
            assert reply.status == 200
            assert reply.headers["X-Peerplane-Served-By"] == follower.name
            ss = reply.json()["StreamStatus"]
            assert ss["LastHeartbeat"] and ss["LastReceive"] and ss["LastSend"], ss
            [row] = [r for r in follower.call("GET", f"/v1/peerings{query}").json()
                     if r["Name"] == name]
            assert row["StreamStatus"]["LastHeartbeat"], row
    assert dc1.agents[0].call("DELETE", f"/v1/peering/{name}").status == 200
    wait_state(dc2, name, "TERMINATED")
    wait_state(dc1, name, None)
    assert dc2.agents[0].call("DELETE", f"/v1/peering/{name}").status == 200
    wait_state(dc2, name, None)


def test_dialer_deletion_terminates_the_acceptor(dc1, dc2):
    peer(dc1, dc2, "dialer-deletes")
    assert dc2.agents[0].call("DELETE", "/v1/peering/dialer-deletes").status == 200
    wait_state(dc1, "dialer-deletes", "TERMINATED")
    wait_state(dc2, "dialer-deletes", None)
    assert dc1.leader().call("DELETE", "/v1/peering/dialer-deletes").status == 200
    wait_state(dc1, "dialer-deletes", None)


def test_terminated_dialer_reestablishes_with_a_new_token(dc1, dc2):
    peer(dc1, dc2, "again")
    first_id = peering(dc2.leader(), "again")["ID"]
    assert dc1.leader().call("DELETE", "/v1/peering/again").status == 200
    wait_state(dc2, "again", "TERMINATED")
    wait_state(dc1, "again", None)
    time.sleep(HEARTBEAT_TIMEOUT + 1)  # long enough for any stale liveness timer to fire
    # no DELETE on dc2 first: a new token re-establishes the TERMINATED record
    peer(dc1, dc2, "again")
    assert peering(dc2.leader(), "again")["ID"] == first_id


# ---- tokens ----


def test_reused_token_is_refused(dc1, dc2):
    tok = token(dc1, "reuse")
    assert establish(dc2, "reuse", tok).status == 200
    wait_state(dc1, "reuse", "ACTIVE")
    for name in ("reuse", "reuse-other"):
        reply = establish(dc2, name, tok)
        assert reply.status == 403 and reply.text == DENIED, reply.text
    # the refused re-use did not disturb the live peering
    assert state(dc2, "reuse") == "ACTIVE" and state(dc1, "reuse") == "ACTIVE"
    rec = peering(dc2.leader(), "reuse-other")
    assert rec["State"] == "PENDING" and rec["StreamStatus"]["LastError"] == DENIED


def test_superseded_token_is_refused(dc1, dc2):
    old = token(dc1, "super")
    new = token(dc1, "super")
    reply = establish(dc2, "super", old)
    assert reply.status == 403 and reply.text == DENIED, reply.text
    assert establish(dc2, "super", new).status == 200
    wait_state(dc2, "super", "ACTIVE")
    wait_state(dc1, "super", "ACTIVE")


def test_token_from_the_same_cluster_is_refused(dc1):
    reply = establish(dc1, "self-peer", token(dc1, "self"))
    assert reply.status == 400 and "cannot create a peering within the same cluster" in reply.text


@pytest.mark.parametrize("field", ["CA", "ServerName"])
def test_wrong_ca_or_server_name_never_becomes_active(dc1, dc2, field):
    name = f"bad-{field.lower()}"
    good = token(dc1, name)
    doc = decode(good)
    if field == "CA":
        doc["CA"] = [new_identity()["CACert"]]
        cause = "certificate verify failed"
    else:
        doc["ServerName"] = "server.dc1.peering.wrong.consul"
        cause = "Hostname mismatch"
    reply = establish(dc2, name, encode(doc))
    assert reply.status == 502, reply.text
    assert "failed to exchange peering secret through address" in reply.text
    assert cause in reply.text
    rec = peering(dc2.leader(), name)
    assert rec["State"] == "PENDING" and cause in rec["StreamStatus"]["LastError"]
    time.sleep(1)
    assert state(dc2, name) != "ACTIVE" and state(dc1, name) == "PENDING"
    # the establishment secret was never handed to the impostor: the real token still works
    assert establish(dc2, name, good).status == 200
    wait_state(dc2, name, "ACTIVE")
    wait_state(dc1, name, "ACTIVE")


def test_manual_addresses_rotate_past_dead_ones_and_followers(dc1, dc2):
    follower = dc1.followers()[0]
    tok = token(dc1, "via-lb", ServerExternalAddresses=[
        "127.0.0.1:1", f"127.0.0.1:{follower.peering_port}"])
    assert decode(tok)["ManualServerAddresses"][0] == "127.0.0.1:1"
    reply = establish(dc2, "via-lb", tok)
    assert reply.status == 200, reply.text
    wait_state(dc2, "via-lb", "ACTIVE")
    wait_state(dc1, "via-lb", "ACTIVE")


def test_unreachable_acceptor_fails_after_the_exchange_window(dc1, dc2):
    doc = decode(token(dc1, "nowhere"))
    doc["ServerAddresses"] = ["127.0.0.1:1"]
    start = time.monotonic()
    reply = establish(dc2, "nowhere", encode(doc))
    took = time.monotonic() - start
    assert reply.status == 502, reply.text
    assert reply.text.startswith('failed to exchange peering secret through address '
                                 '"127.0.0.1:1": '), reply.text
    assert 2.5 <= took < 15, took
    assert state(dc2, "nowhere") == "PENDING" and state(dc1, "nowhere") == "PENDING"


def test_peer_listener_refuses_garbage_and_strangers(dc1, dc2):
    """Whatever reaches the peering port, the servers answer with a refusal and keep going."""
    doc = decode(token(dc1, "garbage"))
    leader = dc1.leader()
    ctx = ssl.create_default_context(cadata="".join(doc["CA"]))
    base = f"https://127.0.0.1:{leader.peering_port}/peerstream/v1"

    async def probe() -> list:
        out = []
        async with aiohttp.ClientSession() as s:
            kw = {"ssl": ctx, "server_hostname": doc["ServerName"]}
            wrong = json.dumps({"PeerID": doc["PeerID"], "EstablishmentSecret": "nope"})
            for raw in (b"abc", b"[]", b'{"PeerID": 1, "EstablishmentSecret": null}',
                        wrong.encode()):
                async with s.post(f"{base}/exchange-secret", data=raw, **kw) as r:
                    out.append((r.status, (await r.json())["Code"]))
            for frames in ([b"\xc1garbage"], [msgpack.packb({"Type": "Heartbeat"})],
                           [msgpack.packb({"Type": "Open", "PeerID": doc["PeerID"],
                                           "StreamSecretID": "x", "Remote": [1]})],
                           [msgpack.packb({"Type": "Open", "PeerID": "unknown"})]):
                async with s.ws_connect(f"{base}/stream", **kw) as ws:
                    for f in frames:
                        await ws.send_bytes(f)
                    msg = await ws.receive(timeout=10)
                    out.append(msgpack.unpackb(msg.data)["Code"])
        return out

    assert asyncio.run(probe()) == [
        (400, "InvalidArgument"), (400, "InvalidArgument"), (403, "PermissionDenied"),
        (403, "PermissionDenied"), "InvalidArgument", "InvalidArgument", "PermissionDenied",
        "InvalidArgument",
    ]
    # the garbage did not consume the token: it still establishes
    peer_reply = establish(dc2, "garbage", encode(doc))
    assert peer_reply.status == 200, peer_reply.text
    wait_state(dc1, "garbage", "ACTIVE")
    no_tracebacks(dc1, dc2)


# ---- failover ----


@pytest.mark.parametrize("side", ["acceptor", "dialer"])
def test_leader_kill_9_while_active_comes_back_active(dc1, dc2, side):
    name = f"failover-{side}"
    peer(dc1, dc2, name)
    victim_cluster = dc1 if side == "acceptor" else dc2
    victim = victim_cluster.leader()
    with StateSampler({"dc1": dc1, "dc2": dc2}, name) as sampler:
        victim.kill()
        start = time.monotonic()
        new_leader = victim_cluster.leader()
        assert new_leader is not victim

        def active_from_new_leader() -> bool:
            rec = peering(new_leader, name)
            return rec["State"] == "ACTIVE" and rec["StreamStatus"]["LastHeartbeat"] is not None

        eventually(active_from_new_leader, 30, 0.05)
        wait_state(dc1, name, "ACTIVE")
        wait_state(dc2, name, "ACTIVE")
        print(f"{side} leader kill -9: ACTIVE again after {time.monotonic() - start:.2f}s")
        time.sleep(0.5)
    for key, seen in sampler.seen.items():
        assert seen <= {"ACTIVE", "FAILING"}, (key, seen)
    victim.start()
    victim.wait_ready()
    victim_cluster.wait_converged()


def test_acceptor_cluster_down_then_up(dc1, dc2):
    peer(dc1, dc2, "outage")
    start = time.monotonic()
    dc1.stop()  # SIGTERM: the acceptor's leader says goodbye (no instant FAILING)
    wait_state(dc2, "outage", "FAILING", timeout=HEARTBEAT_TIMEOUT + 20)
    failed_after = time.monotonic() - start
    assert failed_after >= HEARTBEAT_TIMEOUT - 0.5, failed_after
    rec = peering(dc2.leader(), "outage")
    assert rec["StreamStatus"]["LastError"], rec
    dc1.start()
    start = time.monotonic()
    wait_state(dc2, "outage", "ACTIVE", timeout=60)
    wait_state(dc1, "outage", "ACTIVE", timeout=30)
    print(f"acceptor down: FAILING after {failed_after:.2f}s; "
          f"ACTIVE {time.monotonic() - start:.2f}s after restart")
    assert "LastError" not in peering(dc2.leader(), "outage")["StreamStatus"]
    no_tracebacks(dc1, dc2)
