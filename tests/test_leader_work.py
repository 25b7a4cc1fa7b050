"""Leader routines do work in proportion to what changed, not to how many peerings exist.

A one-server Raft node (real PySyncObj, real proposer) leads an FSM seeded with N peerings; the
reconciler and the deletion routine run as on any leader. The test counts the peerings they
look at (their `visits` counters) while the same commits are applied at N = 100 and N = 5,000:
after the one full pass of a new leader, each commit costs the same small number of visits.
"""

from __future__ import annotations

import asyncio

import pytest

from cluster.commands import Delete, GenerateToken, encode
from cluster.fsm import FSM
from cluster.leader import LeaderRoutines
from cluster.peering.reconciler import PeeringService
from cluster.peering.tls import LeafCerts
from cluster.proposer import Proposer
from cluster.raft import RaftNode, RaftTiming
from lab.cluster import free_ports

COMMITS = 20
AT = "2026-01-02T03:04:05Z"


def seeded(n: int) -> FSM:
    """n peerings: acceptors, a third of them ACTIVE, and dialers without a stream secret."""
    fsm = FSM()
    for i in range(n):
        if i % 3 == 2:
            cmd = {"op": "establish", "Partition": "default", "Name": f"p{i:05d}",
                   "ID": f"id-{i}", "PeerID": "x", "PeerServerAddresses": ["127.0.0.1:1"]}
        else:
            cmd = {"op": "generate_token", "Partition": "default", "Name": f"p{i:05d}",
                   "ID": f"id-{i}", "EstablishmentSecret": "s"}
        assert fsm.apply(encode(cmd)).get("changed")
        if i % 3 == 1:
            event = {"op": "peering_event", "ID": f"id-{i}", "Event": "stream_open"}
            assert fsm.apply(encode(event)).get("changed")
    return fsm


async def settle(*counters: PeeringService | LeaderRoutines) -> None:
    """Until the routines' counters stop moving (their passes are done)."""
    last = None
    for _ in range(200):
        await asyncio.sleep(0.05)
        now = tuple(c.visits for c in counters)
        if now == last:
            return
        last = now


async def per_commit_visits(n: int, data_dir: str) -> tuple[float, float, int]:
    loop = asyncio.get_running_loop()
    fsm = seeded(n)
    port = free_ports(1)[0]
    node = RaftNode(self_addr=f"127.0.0.1:{port}", peers=[], bind_addr=f"127.0.0.1:{port}",
                    data_dir=data_dir, password="secret", fsm=fsm,
                    timing=RaftTiming(durable=False))
    node.attach(loop)
    proposer = Proposer(node)
    peering = PeeringService(node=node, proposer=proposer, fsm=fsm, datacenter="dc1",
                             leaf=LeafCerts(lambda: fsm.identity, "dc1"))
    leader = LeaderRoutines(node, fsm, proposer)
    leader.add(peering.run_leader)
    fsm.subscribe(lambda _i, touched: loop.call_soon_threadsafe(peering.on_change, touched))
    fsm.subscribe(lambda _i, touched: loop.call_soon_threadsafe(leader.on_change, touched))
    supervise = asyncio.create_task(leader.supervise())
    try:
        for _ in range(200):
            if peering.visits >= n:
                break
            await asyncio.sleep(0.05)
        await settle(peering, leader)
        first_pass = peering.visits
        before = (peering.visits, leader.visits)
        for i in range(COMMITS):
            name = f"new{i}" if i % 2 else f"p{i:05d}"  # new peerings and deletions
            cmd = (GenerateToken(Partition="default", Name=name, ID=f"new-{i}",
                                 EstablishmentSecret="s") if i % 2 else
                   Delete(Partition="default", Name=name, DeletedAt=AT))
            assert "error" not in await proposer.apply(cmd)
            await asyncio.sleep(0.02)  # let the routines run between commits
        # The deletions are carried out (removed through Raft by the deletion routine).
        for _ in range(300):
            if all(fsm.by_id(f"id-{i}") is None for i in range(0, COMMITS, 2)):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the deleted peerings were not removed")
        await settle(peering, leader)
        return ((peering.visits - before[0]) / COMMITS, (leader.visits - before[1]) / COMMITS,
                first_pass)
    finally:
        supervise.cancel()
        with pytest.raises(asyncio.CancelledError):
            await supervise
        node.destroy()


async def test_per_commit_work_of_leader_routines_does_not_grow_with_the_peerings(tmp_path):
    small = await per_commit_visits(100, str(tmp_path / "small"))
    large = await per_commit_visits(5000, str(tmp_path / "large"))
    print(f"visits per commit (reconciler, deletion) at 100: {small[:2]}, at 5000: {large[:2]}")
    # A new leader looks at every peering once...
    assert small[2] >= 100 and large[2] >= 5000
    # ...then each commit costs a few visits (the touched peering, its removal), whatever N.
    for s, big in zip(small[:2], large[:2], strict=True):
        assert big <= 3
        assert big <= s + 0.5


def test_a_follower_reconciler_keeps_nothing_of_what_commits_touched():
    # Followers apply every commit too; what they touched matters only to a leader, which
    # starts with a full pass. Kept, it grew by every peering ever written.
    fsm = FSM()
    peering = PeeringService(node=None, proposer=None, fsm=fsm, datacenter="dc1",
                             leaf=LeafCerts(lambda: fsm.identity, "dc1"))
    peering.on_change(frozenset({("peerings", "id-1"), ("peerings", "id-2")}))
    assert peering._dirty == set()
    assert not peering._kick.is_set()
