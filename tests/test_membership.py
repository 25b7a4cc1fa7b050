"""Issue 16: dynamic membership with real processes - join with --join, remove-peer over HTTP
and the CLI, replacing a dead server, restarts - under write load, with nothing acknowledged
lost and the history linearizable."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import SCENARIO_LINES

from cluster.autopilot import dead_to_remove
from lab.cluster import Agent, LocalCluster, eventually
from lab.workload import ScenarioReport, Workload, verify

pytestmark = pytest.mark.integration


def peers_everywhere(c: LocalCluster, expected: set[str], timeout: float = 30.0) -> float:
    """Wait until every running server lists exactly `expected`; seconds it took."""
    started = time.monotonic()

    def agreed() -> bool:
        return all(set(a.call("GET", "/v1/status/peers", timeout=2).json()) == expected
                   for a in c.agents if a.running)

    eventually(agreed, timeout)
    return time.monotonic() - started


def remove(via: Agent, addr: str) -> float:
    started = time.monotonic()
    reply = via.call("DELETE", f"/v1/operator/raft/peer?address={addr}", timeout=15)
    assert (reply.status, reply.text) == (200, ""), reply.text
    return time.monotonic() - started


def cli(agent: Agent, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peerplane_cli", *args,
                           f"-http-addr={agent.http_addr}"],
                          capture_output=True, text=True, timeout=60)


def addrs(agents: list[Agent]) -> set[str]:
    return {a.raft_addr for a in agents}


def test_a_server_started_with_join_becomes_a_voter_shown_by_every_view(fresh_cluster):
    c = fresh_cluster
    assert c.leader().call("POST", "/v1/peering/token", {"PeerName": "before-join"}).status == 200
    follower = c.followers()[0]
    new = c.add_server([follower.raft_addr])  # any live member, not necessarily the leader
    peers_everywhere(c, addrs(c.agents))
    c.wait_converged()
    for a in c.agents:
        servers = a.call("GET", "/v1/operator/raft/configuration").json()["Servers"]
        mine = [s for s in servers if s["Address"] == new.raft_addr]
        assert mine and mine[0]["Voter"] is True and mine[0]["Node"] == new.name
        assert new.name in {m["Name"] for m in a.call("GET", "/v1/agent/members").json()}
        gauges = a.call("GET", "/v1/agent/metrics").json()["Gauges"]
        assert {"Name": "peerplane.raft.servers", "Value": 4.0, "Labels": {}} in gauges
        ui = a.call("GET", "/v1/internal/ui/cluster").json()
        assert new.name in {s["Name"] for s in ui["Servers"]}
    # It caught up as a read-only replica before it asked to be a voter.
    log = eventually(lambda: (text := "".join(new.log_lines)) and "is a voting member" in text
                     and text)
    assert log.index("caught up to index") < log.index("is a voting member")
    stale = new.call("GET", "/v1/peering/before-join?stale")
    assert stale.status == 200  # caught up: snapshot + log
    assert new.call("POST", "/v1/peering/token", {"PeerName": "via-new"}).status == 200
    listed = cli(new, "operator", "raft", "list-peers")
    assert listed.returncode == 0 and new.name in listed.stdout


def test_removing_an_unknown_address_is_an_error_and_changes_nothing(cluster):
    leader = cluster.leader()
    before = leader.call("GET", "/v1/operator/raft/configuration").json()["Servers"]
    for a in (leader, cluster.followers()[0]):
        reply = a.call("DELETE", "/v1/operator/raft/peer?address=127.0.0.1:1")
        assert (reply.status, reply.text) == (
            400, 'address "127.0.0.1:1" was not found in the Raft configuration')
        reply = a.call("DELETE", "/v1/operator/raft/peer?id=nope")
        assert (reply.status, reply.text) == (400, 'id "nope" was not found in the Raft '
                                                    "configuration")
    out = cli(leader, "operator", "raft", "remove-peer", "-address=nope")
    assert out.returncode == 1
    assert out.stderr.strip() == ('Error removing peer: Unexpected response code: 400 '
                                  '(address "nope" was not found in the Raft configuration)')
    assert leader.call("GET", "/v1/operator/raft/configuration").json()["Servers"] == before


@pytest.mark.parametrize(("query", "text"), [
    ("", "Must specify either ?id with the server's ID or ?address with IP:port of peer to "
         "remove"),
    ("?id=a&address=b", "Must specify only one of ?id or ?address"),
])
def test_remove_peer_needs_exactly_one_of_address_and_id(cluster, query, text):
    reply = cluster.agents[0].call("DELETE", "/v1/operator/raft/peer" + query)
    assert (reply.status, reply.text) == (400, text)


def test_the_leader_cannot_remove_itself(cluster):
    leader = cluster.leader()
    reply = cluster.followers()[0].call(
        "DELETE", f"/v1/operator/raft/peer?address={leader.raft_addr}")
    assert reply.status == 400
    assert reply.text.startswith(f'address "{leader.raft_addr}" is the leader')
    assert len(leader.call("GET", "/v1/status/peers").json()) == 3


def test_remove_peer_cli_needs_an_address_or_an_id(cluster):
    out = cli(cluster.agents[0], "operator", "raft", "remove-peer")
    assert (out.returncode, out.stderr.strip()) == (
        1, "Error removing peer: an address or id is required for the peer to remove")


def test_grow_3_to_5_and_shrink_back_under_write_load_loses_no_acknowledged_write(
        fresh_cluster):
    c = fresh_cluster
    gone: list[Agent] = []
    report = ScenarioReport("membership-grow-shrink")
    load = Workload(lambda: [a for a in c.agents if a.running and a not in gone],
                    modes=("consistent", "default"), max_ops=100_000).start()
    t0 = time.monotonic()
    timings = []
    time.sleep(1.0)
    for member in (c.agents[1], c.agents[0]):  # 3 -> 4 -> 5
        started = time.monotonic()
        c.add_server([member.raft_addr])
        peers_everywhere(c, addrs(c.agents))
        timings.append(f"join={time.monotonic() - started:.1f}s")
        report.faults += 1
        time.sleep(1.0)
    for _ in range(2):  # 5 -> 4 -> 3: remove a follower each time (the newest first)
        leader = c.leader(among=[a for a in c.agents if a.running])
        victim = next(a for a in reversed(c.agents) if a.running and a is not leader)
        gone.append(victim)
        timings.append(f"remove={remove(c.followers()[0], victim.raft_addr):.2f}s")
        victim.kill()
        peers_everywhere(c, addrs([a for a in c.agents if a.running]))
        report.faults += 1
        time.sleep(1.0)
    load.stop()
    report.max_gap = load.max_gap(t0, time.monotonic())
    verify(c, load, report)
    SCENARIO_LINES.append(report.line() + " " + " ".join(timings))
    assert report.lost_writes == []
    assert report.verdict == "yes"
    assert report.acknowledged_writes > 0


def test_a_sigkilled_server_is_replaced_with_remove_peer_and_a_fresh_join(fresh_cluster,
                                                                         tmp_path):
    c = fresh_cluster
    report = ScenarioReport("membership-replace")
    load = Workload(lambda: [a for a in c.agents if a.running], modes=("consistent",),
                    max_ops=100_000).start()
    t0 = time.monotonic()
    dead = c.followers()[0]
    dead.kill()
    report.faults += 1
    time.sleep(1.0)
    out = cli(c.leader(among=[a for a in c.agents if a.running]), "operator", "raft",
              "remove-peer", f"-address={dead.raft_addr}")
    assert (out.returncode, out.stdout.strip()) == (
        0, f'Removed peer with address "{dead.raft_addr}"'), out.stderr
    live = [a for a in c.agents if a.running]
    peers_everywhere(c, addrs(live))
    fresh = c.add_server([live[0].raft_addr])
    peers_everywhere(c, addrs(live) | {fresh.raft_addr})
    time.sleep(1.0)
    load.stop()
    report.max_gap = load.max_gap(t0, time.monotonic())
    verify(c, load, report)
    SCENARIO_LINES.append(report.line())
    assert report.lost_writes == [] and report.verdict == "yes"


def test_every_server_restarted_after_membership_changes_keeps_the_configuration(fresh_cluster):
    c = fresh_cluster
    c.add_server([c.agents[0].raft_addr])
    peers_everywhere(c, addrs(c.agents))
    leader = c.leader()
    victim = next(a for a in c.agents[:3] if a is not leader)  # an original server
    remove(leader, victim.raft_addr)
    victim.kill()
    members = addrs([a for a in c.agents if a.running])
    peers_everywhere(c, members)
    assert leader.call("POST", "/v1/peering/token", {"PeerName": "kept"}).status == 200
    for a in c.agents:
        a.kill()
    for a in c.agents:
        if a is not victim:
            a.start()
    for a in c.agents:
        if a is not victim:
            a.wait_ready()
    peers_everywhere(c, members)
    c.wait_converged()
    assert c.leader().call("GET", "/v1/peering/kept?consistent").status == 200


@pytest.mark.parametrize(("servers", "alive", "expected"), [
    (["a", "b", "c", "d"], {"a", "b", "c"}, "d"),  # one of four dead: removed
    (["a", "b", "c"], {"a", "b"}, None),  # would go below min_quorum 3
    (["a", "b", "c", "d", "e"], {"a", "b", "c"}, "d"),  # two of five dead: one at a time
    (["a", "b", "c", "d"], {"a", "b"}, None),  # live ones are no majority
    (["a", "b", "c", "d"], {"a", "b", "c", "d"}, None),
])
def test_autopilot_removes_one_dead_server_only_while_a_majority_lives(servers, alive, expected):
    assert dead_to_remove(servers, "a", alive, min_quorum=3) == expected


def test_autopilot_cleans_up_a_dead_server_but_never_below_min_quorum(tmp_path):
    args = ["--autopilot-cleanup-dead-servers", "--autopilot-dead-server-after", "3"]
    with LocalCluster(str(tmp_path), extra_args=args) as c:
        c.add_server([c.agents[0].raft_addr])
        peers_everywhere(c, addrs(c.agents))
        leader = c.leader()
        first, second = [a for a in c.agents if a is not leader][:2]
        first.kill()
        took = peers_everywhere(c, addrs([a for a in c.agents if a.running]))
        SCENARIO_LINES.append(f"SCENARIO autopilot: dead server removed {took:.1f} s after the "
                              "kill (dead after 3 s)")
        second.kill()
        time.sleep(6.0)  # twice the dead time: three servers stay (min_quorum 3)
        live = [a for a in c.agents if a.running]
        assert len(leader.call("GET", "/v1/status/peers").json()) == 3
        assert live[0].call("POST", "/v1/peering/token", {"PeerName": "after"}).status == 200
