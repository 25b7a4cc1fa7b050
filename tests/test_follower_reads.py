"""Issue 15: followers serve default and ?consistent reads themselves, with etcd's follower
ReadIndex - they ask the leader for a read index over the PySyncObj link, wait until they have
applied it, and answer from their own FSM."""

from __future__ import annotations

import asyncio

import pytest
from raft_nodes import three_nodes, wait_leader

from cluster.commands import Barrier
from cluster.raft import NotApplied, RaftTiming
from lab.cluster import eventually
from lab.peering import peering

# A slow heartbeat, so a read answered quickly was answered by a round sent for it.
TIMING = RaftTiming(heartbeat=0.25, election_min=1.5, election_max=2.5, lease=1.0)


@pytest.fixture
def nodes(tmp_path):
    with three_nodes(tmp_path, TIMING) as made:
        yield made


def test_consistent_reads_arriving_together_at_a_follower_share_one_request_and_round(nodes):
    async def go() -> tuple[int, list[int], int, int, int]:
        leader = await wait_leader(nodes)
        written = int((await leader.submit(Barrier(), 5.0))["index"])
        await asyncio.sleep(0.3)
        follower = next(n for n in nodes if n is not leader)
        sent, rounds = follower.read_requests_sent, leader._sync.rounds_sent
        indexes = await asyncio.gather(*(follower.follower_read_index(False, 5.0)
                                         for _ in range(100)))
        return (written, indexes, follower.read_requests_sent - sent,
                leader._sync.rounds_sent - rounds, follower.applied_index())

    written, indexes, requests, rounds, applied = asyncio.run(go())
    assert min(indexes) >= written
    assert applied >= max(indexes)  # answered once the follower had applied the index
    assert requests == 1  # all 100 arrived before the request was sent
    assert rounds == 1  # one quorum round, sent at once (the heartbeat is 250 ms)


def test_reads_at_every_server_share_the_leaders_rounds(nodes):
    async def go() -> tuple[int, list[int], int, int]:
        leader = await wait_leader(nodes)
        written = int((await leader.submit(Barrier(), 5.0))["index"])
        await asyncio.sleep(0.3)
        followers = [n for n in nodes if n is not leader]
        sent = sum(f.read_requests_sent for f in followers)
        rounds = leader._sync.rounds_sent
        indexes = await asyncio.gather(
            *(f.follower_read_index(False, 5.0) for f in followers for _ in range(50)),
            *(leader.read_index(5.0) for _ in range(50)))
        return (written, indexes, sum(f.read_requests_sent for f in followers) - sent,
                leader._sync.rounds_sent - rounds)

    written, indexes, requests, rounds = asyncio.run(go())
    assert min(indexes) >= written
    assert requests <= 4  # each follower: one request, two if reads kept arriving meanwhile
    assert rounds <= requests + 2  # at most a round per request (+ the leader's own one or two)


def test_a_default_read_at_a_follower_is_answered_under_the_lease_without_a_round(nodes):
    async def go() -> tuple[int, int, int]:
        leader = await wait_leader(nodes)
        written = int((await leader.submit(Barrier(), 5.0))["index"])
        follower = next(n for n in nodes if n is not leader)
        rounds = leader._sync.rounds_sent
        index = await follower.follower_read_index(True, 5.0)
        return written, index, leader._sync.rounds_sent - rounds

    written, index, rounds = asyncio.run(go())
    assert index >= written
    assert rounds == 0


def held_requests(leader) -> list:
    """Make the leader hold read-index requests instead of answering them (tick thread)."""
    held: list = []
    leader._on_follower_request = lambda node, message: held.append((node, message))
    return held


async def until(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the timeout"
        await asyncio.sleep(0.005)


def test_a_read_arriving_while_a_request_is_in_flight_is_asked_for_at_once(nodes):
    async def go() -> tuple[int, int, bool]:
        leader = await wait_leader(nodes)
        await leader.submit(Barrier(), 5.0)
        follower = next(n for n in nodes if n is not leader)
        held = held_requests(leader)
        first = asyncio.create_task(follower.follower_read_index(True, 5.0))
        await until(lambda: len(held) == 1)
        second = asyncio.create_task(follower.follower_read_index(True, 5.0))
        await until(lambda: len(held) == 2)  # not waiting for the first to be answered
        requests = [message["id"] for _, message in held]
        for node, message in held:
            leader._answer_follower(node, message["id"], True, leader._sync.raftCommitIndex)
        return len(set(requests)), len(await asyncio.gather(first, second)), first.done()

    distinct, answered, done = asyncio.run(go())
    assert (distinct, answered, done) == (2, 2, True)


def test_the_answer_to_a_later_request_also_answers_the_earlier_ones(nodes):
    async def go() -> tuple[list[int], int]:
        leader = await wait_leader(nodes)
        index = int((await leader.submit(Barrier(), 5.0))["index"])
        follower = next(n for n in nodes if n is not leader)
        held = held_requests(leader)
        reads = []
        for expected in (1, 2, 3):
            reads.append(asyncio.create_task(follower.follower_read_index(True, 5.0)))
            await until(lambda expected=expected: len(held) == expected)
        node, last = held[-1]
        leader._answer_follower(node, last["id"], True, index)  # only the third is answered
        return list(await asyncio.gather(*reads)), index

    indexes, index = asyncio.run(go())
    assert indexes == [index, index, index]


def test_the_leader_refuses_to_ask_itself(nodes):
    async def go() -> None:
        leader = await wait_leader(nodes)
        with pytest.raises(NotApplied):
            await leader.follower_read_index(False, 1.0)

    asyncio.run(go())



@pytest.mark.integration
@pytest.mark.parametrize("query", ["", "?consistent"])
def test_a_follower_read_sees_the_write_acknowledged_just_before_through_another_server(
    cluster, query,
):
    leader = cluster.leader()
    a, b = cluster.followers()
    for i, (writer, reader) in enumerate([(a, b), (b, a), (leader, a), (leader, b)] * 3):
        name = f"fr{query[1:]}-{i}"
        assert writer.call("POST", "/v1/peering/token", {"PeerName": name}).status == 200
        reply = reader.call("GET", f"/v1/peering/{name}{query}")
        assert reply.status == 200, reply.text
        assert reply.headers["X-Peerplane-Served-By"] == reader.name
        listed = reader.call("GET", f"/v1/peerings{query}")
        assert name in [p["Name"] for p in listed.json()]


@pytest.mark.integration
def test_a_blocking_read_at_a_follower_gets_the_read_index_first(cluster):
    follower = cluster.followers()[0]
    assert cluster.leader().call("POST", "/v1/peering/token", {"PeerName": "fr-block"}).status \
        == 200
    index = int(peering(cluster.leader(), "fr-block")["ModifyIndex"])
    # index-1 is already passed once the follower has applied the leader's read index
    reply = follower.call("GET", f"/v1/peering/fr-block?consistent&index={index - 1}&wait=20s")
    assert reply.status == 200
    assert int(reply.headers["X-Consul-Index"]) == index


@pytest.mark.integration
@pytest.mark.parametrize("query", ["", "?consistent", "?max_stale=1s"])
def test_a_follower_cut_off_from_its_leader_answers_no_cluster_leader(fresh_cluster, query):
    c = fresh_cluster
    lone = c.followers()[0]
    others = [a for a in c.agents if a is not lone]
    for a in others:
        a.pause()
    try:
        if "max_stale" in query:  # bounded staleness asks the leader once contact is older
            eventually(lambda: int(lone.call("GET", "/v1/peerings?stale").headers[
                "X-Consul-LastContact"]) > 1000)
        reply = lone.call("GET", "/v1/peerings" + query, timeout=15)
        assert (reply.status, reply.text) == (503, "No cluster leader")
        assert reply.headers["X-Peerplane-Served-By"] == lone.name
    finally:
        for a in others:
            a.resume()
    eventually(lambda: lone.call("GET", "/v1/peerings" + query).status == 200)
