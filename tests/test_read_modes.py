"""Issue 3: each read mode does what its name promises, visibly in its headers."""

from __future__ import annotations

import threading
import time

import pytest

from lab.cluster import eventually
from lab.http import Reply

pytestmark = pytest.mark.integration

READ_PATHS = ["/v1/peerings", "/v1/peering/modes-probe"]


@pytest.fixture(scope="module", autouse=True)
def probe(cluster):
    reply = cluster.agents[0].call("POST", "/v1/peering/token", {"PeerName": "modes-probe"})
    assert reply.status == 200, reply.text


@pytest.mark.parametrize("path", READ_PATHS)
def test_default_read_at_a_follower_is_served_there_with_leader_consistency(cluster, path):
    """Issue 15: the follower asks the leader for a read index (answered under its lease) and
    serves from its own FSM once applied; LastContact 0: the leader confirmed it just now."""
    follower = cluster.followers()[0]
    reply = follower.call("GET", path)
    assert reply.status == 200
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    assert reply.headers["X-Consul-Effective-Consistency"] == "leader"
    assert reply.headers["X-Consul-KnownLeader"] == "true"
    assert reply.headers["X-Consul-LastContact"] == "0"
    assert reply.headers["X-Consul-Query-Backend"] == "blocking-query"
    assert int(reply.headers["X-Consul-Index"]) >= 1


@pytest.mark.parametrize("path", READ_PATHS)
def test_consistent_read_at_a_follower_is_served_there_with_consistent_consistency(
    cluster, path,
):
    follower = cluster.followers()[0]
    reply = follower.call("GET", path + "?consistent")
    assert reply.status == 200
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    assert reply.headers["X-Consul-Effective-Consistency"] == "consistent"
    assert reply.headers["X-Consul-KnownLeader"] == "true"
    assert reply.headers["X-Consul-LastContact"] == "0"
    assert reply.headers["X-Consul-Query-Backend"] == "blocking-query"
    assert int(reply.headers["X-Consul-Index"]) >= 1


@pytest.mark.parametrize("query", ["", "?consistent"])
def test_the_leader_serves_its_own_reads(cluster, query):
    leader = cluster.leader()
    reply = leader.call("GET", "/v1/peerings" + query)
    assert reply.status == 200
    assert reply.headers["X-Peerplane-Served-By"] == leader.name
    assert reply.headers["X-Consul-Effective-Consistency"] == (query[1:] or "leader")
    assert reply.headers["X-Consul-LastContact"] == "0"


@pytest.mark.parametrize("path", READ_PATHS)
def test_stale_read_is_served_locally_by_a_follower(cluster, path):
    follower = cluster.followers()[0]
    reply = follower.call("GET", path + "?stale")
    assert reply.status == 200
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    assert reply.headers["X-Consul-Effective-Consistency"] == "stale"
    assert reply.headers["X-Consul-KnownLeader"] == "true"
    assert 0 <= int(reply.headers["X-Consul-LastContact"]) < 2000


def test_max_stale_within_bound_is_served_locally(cluster):
    follower = cluster.followers()[0]
    reply = follower.call("GET", "/v1/peerings?max_stale=10s")
    assert reply.status == 200
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    assert reply.headers["X-Consul-Effective-Consistency"] == "stale"


def test_leader_param_forces_the_default_mode(cluster):
    reply = cluster.followers()[0].call("GET", "/v1/peerings?stale&leader")
    assert reply.headers["X-Consul-Effective-Consistency"] == "leader"
    assert reply.headers["X-Consul-LastContact"] == "0"


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("?stale&consistent", "Cannot specify ?stale with ?consistent, conflicting semantics."),
        ("?max_stale=x", 'Invalid max_stale value "x"'),
        ("?index=5&wait=soon", "Invalid wait time"),
        ("?index=abc", "Invalid index"),
    ],
)
@pytest.mark.parametrize("path", READ_PATHS)
def test_bad_read_parameters_are_rejected(cluster, path, query, text):
    reply = cluster.agents[0].call("GET", path + query)
    assert (reply.status, reply.text) == (400, text)
    assert "X-Consul-Index" not in reply.headers


def _in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


@pytest.mark.parametrize("path", ["/v1/peerings", "/v1/peering/modes-probe"])
def test_blocking_read_returns_soon_after_a_write_through_another_node(cluster, path):
    a, b = cluster.agents[0], cluster.agents[1]
    index = int(a.call("GET", path).headers["X-Consul-Index"])
    started = time.monotonic()
    t, out = _in_thread(lambda: a.call("GET", f"{path}?index={index}&wait=30s"))
    time.sleep(0.5)
    assert t.is_alive()  # still blocked: nothing changed yet
    assert b.call("POST", "/v1/peering/token", {"PeerName": "modes-probe"}).status == 200
    t.join(15)
    reply: Reply = out[0]
    assert reply.status == 200
    assert int(reply.headers["X-Consul-Index"]) > index
    assert time.monotonic() - started < 15


def test_blocking_read_without_a_write_returns_at_wait(cluster):
    a = cluster.agents[2]
    index = int(a.call("GET", "/v1/peerings?stale").headers["X-Consul-Index"])
    started = time.monotonic()
    reply = a.call("GET", f"/v1/peerings?stale&index={index}&wait=1s")
    elapsed = time.monotonic() - started
    assert reply.status == 200
    assert int(reply.headers["X-Consul-Index"]) == index
    assert 1.0 <= elapsed < 1.0 + 1 / 16 + 1.0  # wait plus Consul's jitter (wait/16)


def test_blocking_read_with_an_older_index_returns_at_once(cluster):
    started = time.monotonic()
    reply = cluster.agents[0].call("GET", "/v1/peerings?index=0&wait=30s")
    assert reply.status == 200
    assert time.monotonic() - started < 5


def test_status_leader_and_peers_answer_from_every_node(cluster):
    leader = cluster.leader()
    members = sorted(a.raft_addr for a in cluster.agents)
    for a in cluster.agents:
        assert a.call("GET", "/v1/status/leader").json() == leader.raft_addr
        assert a.call("GET", "/v1/status/peers").json() == members
        cfg = a.call("GET", "/v1/operator/raft/configuration").json()
        assert [s["Address"] for s in cfg["Servers"]] == members
        assert [s["Leader"] for s in cfg["Servers"]] == [m == leader.raft_addr for m in members]
        assert {s["Node"] for s in cfg["Servers"]} == {x.name for x in cluster.agents}


def test_a_resumed_stale_leader_never_serves_data_older_than_the_majoritys_write(fresh_cluster):
    """SIGSTOP the leader, let the others elect and acknowledge a write, then have reads queued
    at the old leader the moment it wakes up still believing it leads."""
    c = fresh_cluster
    old = c.leader()
    others = [a for a in c.agents if a is not old]
    assert old.call("POST", "/v1/peering/token", {"PeerName": "before"}).status == 200
    old.pause()
    try:
        new = c.leader(among=others)
        assert new.call("POST", "/v1/peering/token", {"PeerName": "during"}).status == 200
        reads = {q: _in_thread(lambda q=q: old.call("GET", "/v1/peerings" + q, timeout=20))
                 for q in ("", "?consistent")}
        time.sleep(0.3)  # the requests sit in the paused process's accept queue
    finally:
        old.resume()
    for query, (t, out) in reads.items():
        t.join(20)
        reply = out[0]
        if reply.status == 200:
            names = [p["Name"] for p in reply.json()]
            assert "during" in names, f"{query or 'default'} read returned stale data {names}"
        else:
            assert reply.status == 503, reply.text
    eventually(lambda: c.leader() is not None)


def test_stale_reads_on_a_node_cut_off_by_pausing_the_others_report_growing_staleness(
    fresh_cluster,
):
    c = fresh_cluster
    lone = c.followers()[0]
    others = [a for a in c.agents if a is not lone]
    for a in others:
        a.pause()
    try:
        first = lone.call("GET", "/v1/peerings?stale", timeout=5)
        time.sleep(1.5)
        second = lone.call("GET", "/v1/peerings?stale", timeout=5)
        assert first.status == second.status == 200
        assert int(second.headers["X-Consul-LastContact"]) > int(
            first.headers["X-Consul-LastContact"]
        ) + 1000
        eventually(
            lambda: lone.call("GET", "/v1/peerings?stale", timeout=5).headers[
                "X-Consul-KnownLeader"] == "false",
            timeout=10,
        )
        bounded = lone.call("GET", "/v1/peerings?max_stale=1s", timeout=15)
        assert (bounded.status, bounded.text) == (503, "No cluster leader")
        default = lone.call("GET", "/v1/peerings", timeout=15)
        assert (default.status, default.text) == (503, "No cluster leader")
        write = lone.call("POST", "/v1/peering/token", {"PeerName": "nope"}, timeout=15)
        assert (write.status, write.text) == (503, "No cluster leader")
    finally:
        for a in others:
            a.resume()
