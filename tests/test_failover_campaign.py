"""Issue 15 (failover): a follower whose connection to the leader closes - a killed or crashed
leader's sockets close at once - campaigns as soon as vote stickiness allows (vote_guard after
the last contact, plus a random 50-250 ms against split votes), not after a random 1-2 s
election timeout. Three real PySyncObj nodes in one process."""

from __future__ import annotations

import asyncio
import time

import pytest
from raft_nodes import three_nodes, wait_leader

from cluster.commands import Barrier
from cluster.raft import RaftNode, RaftTiming

TIMING = RaftTiming()  # election timeout 1-2 s, vote_guard 0.9 s


@pytest.fixture
def nodes(tmp_path):
    with three_nodes(tmp_path, TIMING) as made:
        yield made


def test_followers_campaign_just_after_vote_guard_when_the_leader_connection_closes(nodes):
    async def go() -> tuple[list[float], RaftNode, RaftNode]:
        loop = asyncio.get_running_loop()
        for n in nodes:
            n.attach(loop)
        old = await wait_leader(nodes)
        await old.submit(Barrier(), 5.0)
        followers = [n for n in nodes if n is not old]
        old.destroy()
        deadline = time.monotonic() + 2 * TIMING.vote_guard
        while any(f.election_delay() > TIMING.vote_guard + 0.25 for f in followers):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        delays = [f.election_delay() for f in followers]
        return delays, old, await wait_leader(followers)

    delays, old, new = asyncio.run(go())
    nodes.remove(old)  # destroyed already
    assert all(TIMING.vote_guard + 0.05 <= d <= TIMING.vote_guard + 0.25 for d in delays), delays
    assert new is not old
