"""A write is served by the server it arrives at (issue #15): a follower parses, validates and
decides it, and commits its command through Raft (PySyncObj's follower->leader forwarding over
the Raft link); it answers once the entry is committed and applied by its own FSM.

Real processes and HTTP for what clients see; three real PySyncObj nodes in one process for
what the Raft layer guarantees (tests/raft_nodes.py)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from raft_nodes import three_nodes, wait_leader

from api.commit import SCOPE, ACLChanged, WriteScope, commit
from api.context import ServerContext
from cluster import acl
from cluster.commands import AclPolicySet, Barrier, CatalogRegister, GenerateToken
from cluster.proposer import Proposer
from cluster.raft import NotApplied, RaftTiming
from lab.cluster import LocalCluster, eventually

# Headers whose values differ between any two answers (or name the serving server).
_PER_ANSWER = {"Date", "X-Request-Id", "X-Peerplane-Served-By"}


def _same_answer_headers(a: dict[str, str], b: dict[str, str]) -> bool:
    return ({k: v for k, v in a.items() if k not in _PER_ANSWER}
            == {k: v for k, v in b.items() if k not in _PER_ANSWER})


@pytest.mark.integration
def test_a_catalog_write_through_a_follower_is_answered_there_as_the_leader_would(cluster):
    leader = cluster.leader()
    follower = next(a for a in cluster.agents if a is not leader)
    body = {"Node": "via-follower", "Address": "10.0.0.7",
            "Service": {"Service": "web", "Port": 8080}}
    reply = follower.call("PUT", "/v1/catalog/register", body)
    assert (reply.status, reply.body) == (200, b"true")
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    on_leader = leader.call("PUT", "/v1/catalog/register", dict(body, Node="via-leader"))
    assert (on_leader.status, on_leader.body) == (200, b"true")
    assert on_leader.headers["X-Peerplane-Served-By"] == leader.name
    assert _same_answer_headers(reply.headers, on_leader.headers)
    # Acknowledged means committed: a default read (served by the follower once it applied the
    # leader's read index) sees it at once.
    nodes = follower.call("GET", "/v1/catalog/nodes")
    assert nodes.status == 200, nodes.text
    assert nodes.headers["X-Peerplane-Served-By"] == follower.name
    assert {n["Node"]: n["Address"] for n in nodes.json()}["via-follower"] == "10.0.0.7"


@pytest.mark.integration
def test_a_token_generated_through_a_follower_names_the_peering_the_leader_has(cluster):
    leader = cluster.leader()
    follower = next(a for a in cluster.agents if a is not leader)
    reply = follower.call("POST", "/v1/peering/token", {"PeerName": "from-a-follower"})
    assert reply.status == 200, reply.text
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    assert list(reply.json()) == ["PeeringToken"]
    token = json.loads(base64.b64decode(reply.json()["PeeringToken"]))
    rec = leader.call("GET", "/v1/peering/from-a-follower")
    assert rec.status == 200, rec.text
    assert (rec.json()["ID"], rec.json()["State"]) == (token["PeerID"], "PENDING")


@pytest.mark.integration
def test_a_peering_deleted_through_a_follower_right_after_its_creation_elsewhere(cluster):
    """The follower may not have applied the creation yet when it builds the delete (its
    compare-and-set index is then stale): the rebuilt command applies."""
    leader = cluster.leader()
    followers = [a for a in cluster.agents if a is not leader]
    for i, follower in enumerate(followers):
        name = f"short-lived-{i}"
        made = leader.call("POST", "/v1/peering/token", {"PeerName": name})
        assert made.status == 200, made.text
        gone = follower.call("DELETE", f"/v1/peering/{name}")
        assert (gone.status, gone.body) == (200, b"")
        state = leader.call("GET", f"/v1/peering/{name}")
        assert state.status == 404 or state.json()["State"] == "DELETING", state.text


@pytest.mark.integration
def test_a_write_through_a_follower_waits_for_a_new_leader(fresh_cluster: LocalCluster):
    old = fresh_cluster.leader()
    follower = next(a for a in fresh_cluster.agents if a is not old)
    old.kill()
    reply = follower.call("POST", "/v1/peering/token", {"PeerName": "after-the-leader"})
    assert reply.status == 200, reply.text
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    new = fresh_cluster.leader([a for a in fresh_cluster.agents if a.running])
    assert new is not old
    assert new.call("GET", "/v1/peering/after-the-leader").status == 200


@pytest.mark.integration
def test_a_follower_that_cannot_reach_a_leader_answers_503_no_cluster_leader(
        fresh_cluster: LocalCluster):
    leader = fresh_cluster.leader()
    left, gone = [a for a in fresh_cluster.agents if a is not leader]
    leader.kill()
    gone.kill()
    for method, path, body in (
        ("POST", "/v1/peering/token", {"PeerName": "nobody-leads"}),
        ("PUT", "/v1/catalog/register", {"Node": "nobody-leads", "Address": "10.0.0.1"}),
        ("DELETE", "/v1/peering/nobody-leads", None),
    ):
        reply = left.call(method, path, body)
        assert (reply.status, reply.text) == (503, "No cluster leader"), path
        assert reply.headers["X-Peerplane-Served-By"] == left.name
    assert not any("Traceback" in line for line in left.log_lines)


# ---- the Raft layer: three real PySyncObj nodes in one process ----

TIMING = RaftTiming(heartbeat=0.05, election_min=0.6, election_max=1.2, lease=0.3)


@pytest.fixture
def nodes(tmp_path):
    with three_nodes(tmp_path, TIMING) as made:
        yield made


def test_a_stale_followers_compare_and_set_is_rebuilt_on_the_state_that_beat_it(nodes):
    """The conflict is computed when the follower applies its own command, so by then it has
    applied the write that won: the rebuilt command reads that write and applies."""

    async def run() -> None:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        on_leader, on_follower = Proposer(leader), Proposer(follower)

        def token(expect: int) -> GenerateToken:
            return GenerateToken(Partition="default", Name="cas", ID="id-1",
                                 EstablishmentSecret="s", expect_index=expect)

        first = await on_leader.apply(token(0))
        while follower.fsm.get("default", "cas") is None:
            await asyncio.sleep(0.01)
        stale = follower.fsm.get("default", "cas")["ModifyIndex"]
        assert stale == first["index"]
        # A newer write through the leader; the follower's next command still expects `stale`.
        newer = (await on_leader.apply(token(stale)))["index"]
        seen: list[int] = []

        def build() -> GenerateToken:
            if not seen:
                seen.append(stale)  # built before this follower applied the newer write
                return token(stale)
            current = follower.fsm.get("default", "cas")["ModifyIndex"]
            seen.append(current)
            return token(current)

        res = await on_follower.commit(build)
        assert seen == [stale, newer]
        assert res["index"] > newer
        assert leader.fsm.get("default", "cas")["ModifyIndex"] == res["index"]

    asyncio.run(run())


def test_a_command_a_follower_cannot_send_to_its_leader_is_not_applied(tmp_path):
    """The follower still names the leader (no election yet) but has no connection to it: the
    command fails at once as certainly not applied (safe to retry), instead of waiting for a
    leader change and ending as an unknown outcome."""
    slow = RaftTiming(heartbeat=0.05, election_min=4.0, election_max=5.0, lease=0.3)

    async def run(nodes: list) -> None:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        nodes.remove(leader)
        leader.destroy()
        eventually(lambda: not follower._sync.isNodeConnected(follower._sync._getLeader()),
                   timeout=5, interval=0.01)
        assert follower.leader() == leader.self_addr
        with pytest.raises(NotApplied, match="raft: 2"):  # FAIL_REASON.MISSING_LEADER
            await follower.submit(Barrier(), timeout=5)

    with three_nodes(tmp_path, slow) as nodes:
        asyncio.run(run(nodes))


def test_a_followers_command_decided_on_older_acls_is_refused_and_decided_again(nodes):
    """A command carries the ACL revision its decision was made on (api/commit.py): when the
    ACLs changed before it applied, nothing changes and the API hears `ACLChanged`; by then
    this follower has applied the change, so the next decision is made on it."""

    async def run() -> None:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        ctx = ServerContext(node=follower, fsm=follower.fsm, node_name="f", datacenter="dc1",
                            raft_addr=follower.self_addr, http_addr="", peering_addr="",
                            proposer=Proposer(follower))
        decided_on = follower.fsm.acl_revision
        rules = 'peering = "read"'
        policy = {"ID": "33333333-cccc-4ccc-8ccc-000000000001", "Name": "p", "Description": "",
                  "Rules": rules, "Datacenters": [], "Hash": acl.policy_hash("p", "", rules, [])}
        await Proposer(leader).apply(AclPolicySet(Policy=policy, create=True))

        def register() -> CatalogRegister:
            return CatalogRegister(Node={"Node": "n1", "Address": "10.0.0.1"})

        SCOPE.set(WriteScope(acl_index=decided_on))
        with pytest.raises(ACLChanged):
            await commit(ctx, register, "catalog")
        assert follower.fsm.catalog.node("n1") is None
        assert follower.fsm.acl_revision > decided_on  # the change is applied here by now
        scope = WriteScope(acl_index=follower.fsm.acl_revision)
        SCOPE.set(scope)
        assert (await commit(ctx, register, "catalog"))["changed"]
        assert scope.settled
        assert leader.fsm.catalog.node("n1") is not None

    asyncio.run(run())


def test_commands_a_follower_drains_together_travel_together_both_ways(nodes):
    """One message to the leader for the commands a follower's tick drains; the answers to
    those the leader's tick drains ride on the append that carries their entries to that
    follower (no message of their own). Submitted in one loop pass, they are drained
    together - unless a periodic tick happens to fall inside that pass and splits them in
    two."""

    async def run() -> tuple[int, int, int, int]:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        await follower.submit(Barrier(), 5.0)
        sent, alone, carried = (follower._sync.command_messages_sent,
                                leader._sync.response_messages_sent,
                                leader._sync.answers_carried)
        results = await asyncio.gather(*(follower.submit(Barrier(), 10.0) for _ in range(50)))
        assert all("index" in r for r in results)
        return (len(results), follower._sync.command_messages_sent - sent,
                leader._sync.response_messages_sent - alone,
                leader._sync.answers_carried - carried)

    committed, sent, alone, carried = asyncio.run(run())
    assert committed == 50
    assert sent in (1, 2) and carried in (1, 2) and alone == 0, (sent, carried, alone)
