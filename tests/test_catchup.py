"""Issue 16: a joining server catches up (snapshot + log) as a read-only replica before it
votes; the voting node then starts from those files. Three real PySyncObj nodes in-process."""

from __future__ import annotations

import asyncio
import time

from cluster.catchup import catch_up
from cluster.commands import RegisterServer
from cluster.fsm import FSM
from cluster.raft import RaftNode, RaftTiming
from lab.cluster import eventually, free_ports

TIMING = RaftTiming()


def _server(i: int) -> RegisterServer:
    return RegisterServer(RaftAddr=f"10.0.0.{i}:8300", Node=f"n{i}", HTTPAddr=f"10.0.0.{i}:8500",
                          PeeringAddr=f"10.0.0.{i}:8503", Datacenter="dc1")


def test_a_read_only_catch_up_leaves_files_a_new_node_starts_from(tmp_path):
    addrs = [f"127.0.0.1:{p}" for p in free_ports(4)]
    members, newcomer = addrs[:3], addrs[3]
    nodes = [RaftNode(self_addr=a, peers=[p for p in members if p != a], bind_addr=a,
                      data_dir=str(tmp_path / str(i)), password="secret", fsm=FSM(),
                      compaction_entries=10)
             for i, a in enumerate(members)]
    try:
        async def write() -> RaftNode:
            loop = asyncio.get_running_loop()
            for n in nodes:
                n.attach(loop)
            deadline = time.monotonic() + 20
            while not any(n.is_leader() for n in nodes):
                assert time.monotonic() < deadline, "no leader"
                await asyncio.sleep(0.05)
            leader = next(n for n in nodes if n.is_leader())
            for i in range(40):  # several snapshots (compaction every 10 entries)
                await leader.submit(_server(i), 5.0)
            return leader

        leader = asyncio.run(write())
        # Compaction runs in a forked child and ends on a later tick: on a slow machine all
        # 40 writes can be in before the first one finishes. Wait for it (a newcomer must
        # need the snapshot, not just the log).
        eventually(lambda: leader.status()["log_len"] < 40, timeout=20, interval=0.05)
        applied = catch_up(peers=members, data_dir=str(tmp_path / "new"), password="secret",
                           bind_addr=newcomer, timing=TIMING, timeout=30)
        assert applied >= 41
        fresh = RaftNode(self_addr=newcomer, peers=members, bind_addr=newcomer,
                         data_dir=str(tmp_path / "new"), password="secret", fsm=FSM())
        nodes.append(fresh)
        # the new node replays the caught-up state
        eventually(lambda: fresh.fsm.servers_view() == leader.fsm.servers_view(), timeout=10,
                   interval=0.05)
        assert len(fresh.fsm.servers_view()) == 40
    finally:
        for n in nodes:
            n.destroy()
