"""Three real PySyncObj nodes (peerplane's RaftNode) in one process, for tests of the Raft layer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.fsm import FSM
from cluster.raft import RaftNode, RaftTiming
from lab.cluster import free_ports


@contextmanager
def three_nodes(tmp_path: Path, timing: RaftTiming | None = None,
                compaction_entries: int = 50_000) -> Iterator[list[RaftNode]]:
    """Yields the nodes; destroys those still in the list afterwards (a test that destroys one
    itself removes it)."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    made = [
        RaftNode(self_addr=a, peers=[p for p in addrs if p != a], bind_addr=a,
                 data_dir=str(tmp_path / str(i)), password="secret", fsm=FSM(),
                 timing=timing or RaftTiming(), compaction_entries=compaction_entries)
        for i, a in enumerate(addrs)
    ]
    try:
        yield made
    finally:
        for n in made:
            n.destroy()


async def wait_leader(nodes: list[RaftNode], timeout: float = 20.0) -> RaftNode:
    """Attach the running loop to every node; the leader once its lease holds."""
    loop = asyncio.get_running_loop()
    for n in nodes:
        n.attach(loop)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in nodes:
            if n.is_leader() and n.lease_holds():
                return n
        await asyncio.sleep(0.02)
    raise AssertionError("no leader")
