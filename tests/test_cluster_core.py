"""Issue 2 acceptance on real processes: every node answers every call through one leader,
a follower's death does not stop writes, and a whole-cluster SIGKILL loses nothing."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import zlib

import pytest

from lab.cluster import LocalCluster, eventually

pytestmark = pytest.mark.integration


def names(agent, query: str = "") -> list[str]:
    reply = agent.call("GET", "/v1/peerings" + query)
    assert reply.status == 200, reply.text
    return [p["Name"] for p in reply.json()]


def test_tokens_generated_through_each_node_are_listed_by_every_node(fresh_cluster):
    c = fresh_cluster
    leader = c.leader()
    for a in c.agents:
        assert names(a) == []
    for i, a in enumerate(c.agents, start=1):
        reply = a.call("POST", "/v1/peering/token", {"PeerName": f"peer-{i}"})
        assert reply.status == 200, reply.text
        assert reply.headers["X-Peerplane-Served-By"] == a.name  # committed through Raft
        for b in c.agents:
            # default reads wait for the leader's read index, so a write is visible at once
            assert names(b) == [f"peer-{j}" for j in range(1, i + 1)]
    assert c.leader() is leader
    for a in c.agents:
        assert not any("Traceback" in line for line in a.log_lines)


def test_writes_continue_after_a_follower_is_killed(fresh_cluster):
    c = fresh_cluster
    victim = c.followers()[0]
    victim.kill()
    survivor = next(a for a in c.agents if a.running and a is not c.leader())
    for i in range(5):
        reply = survivor.call("POST", "/v1/peering/token", {"PeerName": f"after-kill-{i}"})
        assert reply.status == 200, reply.text
    assert names(c.leader()) == [f"after-kill-{i}" for i in range(5)]


def test_whole_cluster_sigkill_and_restart_keeps_every_acknowledged_peering(tmp_path):
    c = LocalCluster(str(tmp_path)).start()
    try:
        for i in range(30):
            a = c.agents[i % 3]
            assert a.call("POST", "/v1/peering/token", {"PeerName": f"p-{i:02d}"}).status == 200
        a.call("DELETE", "/v1/peering/p-00")
        eventually(lambda: c.agents[0].call("GET", "/v1/peering/p-00").status == 404)
        before = c.leader().call("GET", "/v1/peerings").json()
        assert len(before) == 29
        for a in c.agents:
            a.kill()
        for a in c.agents:
            a.start()
        for a in c.agents:
            a.wait_ready()
        c.wait_converged()
        for a in c.agents:
            after = eventually(lambda a=a: a.call("GET", "/v1/peerings?stale").json() == before)
            assert after
        assert c.leader().call("GET", "/v1/peerings").json() == before
    finally:
        c.stop()


class _Exploit:
    """Unpickling this creates a file: what an unauthenticated peer could do without a password."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _send_pickle(port: int, payload: object) -> bytes:
    data = zlib.compress(pickle.dumps(payload), 3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack("i", len(data)) + data)
        s.settimeout(5)
        try:
            return s.recv(1024)  # b"" once the node drops us
        except (ConnectionResetError, TimeoutError):
            return b""


def test_raft_port_refuses_a_peer_without_the_cluster_password(cluster, tmp_path):
    marker = tmp_path / "pwned"
    leader = cluster.leader()
    assert _send_pickle(leader.raft_port, _Exploit(str(marker))) == b""
    assert not marker.exists()
    # the node is unharmed and still serves writes
    assert leader.call("POST", "/v1/peering/token", {"PeerName": "after-probe"}).status == 200


def test_the_exploit_payload_works_against_a_passwordless_pysyncobj(tmp_path):
    """Control for the test above: the same bytes do run code on a node with no password."""
    from pysyncobj import SyncObj, SyncObjConf

    from lab.cluster import free_ports

    port = free_ports(1)[0]
    node = SyncObj(f"127.0.0.1:{port}", [], SyncObjConf(autoTick=True))
    try:
        marker = tmp_path / "pwned"
        _send_pickle(port, _Exploit(str(marker)))
        assert eventually(marker.exists, timeout=5)
    finally:
        node.destroy_synchronous()
