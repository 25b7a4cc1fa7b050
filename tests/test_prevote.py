"""PreVote (cluster/raft_wall/syncobj.py): a server campaigns only after a majority said, in the
round it has open, that they would vote for it. One real PeerplaneSyncObj, not ticking: its
peers' messages are handed to it as its transport would."""

from __future__ import annotations

import pytest
from pysyncobj.monotonic import monotonic as raft_clock

from cluster.lease import LeaseTracker
from cluster.raft import RaftTiming, sync_conf
from cluster.raft_wall import PeerplaneSyncObj
from cluster.raft_wall.syncobj import CAMPAIGN_RETRY
from lab.cluster import free_ports

TIMING = RaftTiming()


@pytest.fixture
def server(tmp_path):
    me, b, c = (f"127.0.0.1:{p}" for p in free_ports(3))
    conf = sync_conf(TIMING, password="secret", bind_addr=me, data_dir=str(tmp_path),
                     autoTick=False)
    sync = PeerplaneSyncObj(me, [b, c], conf, lease=LeaseTracker(),
                            vote_guard=TIMING.vote_guard, durable=True)
    yield sync
    sync.destroy()


def deliver(sync: PeerplaneSyncObj, peer: int, message: dict) -> None:
    node = sorted(sync.otherNodes, key=str)[peer]
    sync._SyncObj__onMessageReceived(node, message)


def open_pre_vote_round(sync: PeerplaneSyncObj) -> int:
    """The round PySyncObj's passing election deadline opens (_pre_vote_gate)."""
    term = sync.raftCurrentTerm + 1
    sync._pre_vote_term, sync._pre_votes = term, {str(sync.selfNode)}
    return term


def test_a_granted_pre_vote_in_the_open_round_makes_the_server_campaign_on_this_tick(server):
    term = open_pre_vote_round(server)
    deliver(server, 0, {"type": "pre_vote_response", "term": term, "granted": True})
    assert server._pre_vote_won == term
    assert server._SyncObj__raftElectionDeadline == 0.0


def test_a_pre_vote_answer_arriving_after_the_server_took_that_term_starts_no_campaign(server):
    # Asked peer 1 (cut off by a partition) and peer 0; peer 0 won that term instead and this
    # server voted for it. When the partition heals, peer 1's yes to the old round arrives.
    term = open_pre_vote_round(server)
    deliver(server, 0, {"type": "request_vote", "term": term,
                        "last_log_index": 10**6, "last_log_term": 10**6})
    assert server.raftCurrentTerm == term
    deadline = server._SyncObj__raftElectionDeadline
    deliver(server, 1, {"type": "pre_vote_response", "term": term, "granted": True})
    assert server._pre_vote_won != term
    assert server._SyncObj__raftElectionDeadline == deadline > raft_clock()


def test_a_campaign_not_won_is_retried_within_half_a_second_not_an_election_timeout(server):
    # Both followers of a dead leader campaigned at once and voted for themselves: nobody
    # answers this one. The retry (a new pre-vote round) is due well before PySyncObj's 1-2 s.
    term = open_pre_vote_round(server)
    deliver(server, 0, {"type": "pre_vote_response", "term": term, "granted": True})
    server._SyncObj__connectedToAnyone = lambda: True  # PySyncObj campaigns only when linked
    server._onTick(0.0)
    assert (server._SyncObj__raftState, server.raftCurrentTerm) == (1, term)  # a candidate
    due = server._SyncObj__raftElectionDeadline - raft_clock()
    assert CAMPAIGN_RETRY[0] - 0.05 < due <= CAMPAIGN_RETRY[1]
