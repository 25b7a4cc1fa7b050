"""Issue 15: ?consistent proves leadership with ReadIndex - one heartbeat round, sent at once,
shared by the reads that arrive together - on three real PySyncObj nodes in one process."""

from __future__ import annotations

import asyncio

import pytest
from raft_nodes import three_nodes, wait_leader

from cluster.commands import Barrier
from cluster.proposer import Proposer
from cluster.raft import NotApplied, RaftTiming

# A slow heartbeat, so a read answered quickly was answered by a round sent for it.
TIMING = RaftTiming(heartbeat=0.25, election_min=1.5, election_max=2.5, lease=1.0)


@pytest.fixture
def nodes(tmp_path):
    with three_nodes(tmp_path, TIMING) as made:
        yield made


def test_reads_arriving_together_share_one_heartbeat_round_sent_at_once(nodes):
    async def go() -> tuple[list[int], int, float]:
        leader = await wait_leader(nodes)
        await leader.submit(Barrier(), 5.0)
        await asyncio.sleep(0.3)
        rounds, sent = leader.read_rounds, leader._sync.rounds_sent
        indexes = await asyncio.gather(*(leader.read_index(5.0) for _ in range(50)))
        return indexes, leader.read_rounds - rounds, leader._sync.rounds_sent - sent

    indexes, rounds, sent = asyncio.run(go())
    assert len(set(indexes)) == 1 and indexes[0] >= 2
    assert rounds <= 2  # one; two if the first round ended before all 50 reads had started
    assert sent == rounds  # each was sent on request, not left to the next heartbeat


def test_a_read_index_is_at_least_the_commit_index_when_the_read_arrived(nodes):
    async def go() -> tuple[int, int]:
        leader = await wait_leader(nodes)
        res = await leader.submit(Barrier(), 5.0)
        return int(res["index"]), await leader.read_index(5.0)

    written, read = asyncio.run(go())
    assert read >= written


def test_a_follower_refuses_read_index(nodes):
    async def go() -> None:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        with pytest.raises(NotApplied):
            await follower.read_index(1.0)

    asyncio.run(go())


def test_barriers_arriving_together_share_one_no_op_through_the_log(nodes):
    """The `--consistent-reads barrier` mode (cluster/proposer.py): concurrent barriers share
    the no-op in flight or the next one, and each answers an index at least the last write's."""

    async def go() -> tuple[int, list[int], int]:
        leader = await wait_leader(nodes)
        proposer = Proposer(leader)
        written = int((await proposer.apply(Barrier()))["index"])
        # PySyncObj runs the callback before it counts the entry as applied: let it count.
        while leader.applied_index() < leader.status()["commit_idx"]:
            await asyncio.sleep(0.01)
        before = leader.applied_index()
        indexes = await asyncio.gather(*(proposer.barrier(5.0) for _ in range(30)))
        return written, indexes, leader.applied_index() - before

    written, indexes, entries = asyncio.run(go())
    assert min(indexes) >= written
    assert entries <= 2  # one no-op in flight, one for everything that arrived meanwhile
