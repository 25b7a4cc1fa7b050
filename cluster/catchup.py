"""A joining server catches up before it votes: snapshot + log as a read-only replica.

PySyncObj makes a server a voter the moment its `add` entry is appended, and an empty voter
weakens the quorum until it has caught up (3 -> 4 servers: 3 of 4 must acknowledge, and the new
one cannot yet). So a server joining with `--join` first connects to the members as a read-only
replica - PySyncObj's `readonly` node, which members accept without a membership change and
the leader feeds like a follower - until it has applied what the leader had committed. Those
files (journal, meta, snapshot) are in its data dir; the voting node then starts from them
exactly as after a restart, and only then asks to be added.
"""

from __future__ import annotations

import logging
import os
import time

from .fsm import FSM
from .lease import LeaseTracker
from .raft import RaftTiming, Replica, sync_conf
from .raft_wall import PeerplaneSyncObj

log = logging.getLogger("peerplane.raft")


def catch_up(*, peers: list[str], data_dir: str, password: str, bind_addr: str,
             timing: RaftTiming, timeout: float = 600.0, poll: float = 0.05) -> int:
    """Blocking (run it in a thread): the index applied once caught up with the leader's
    commit index. The applies go to a throwaway FSM; the voting node replays the files."""
    started = time.monotonic()
    os.makedirs(data_dir, exist_ok=True)
    conf = sync_conf(timing, password=password, bind_addr=bind_addr, data_dir=data_dir)
    sync = PeerplaneSyncObj(None, peers, conf, consumers=[Replica(FSM())], lease=LeaseTracker(),
                            vote_guard=timing.vote_guard, durable=timing.durable)
    try:
        deadline = started + timeout
        while time.monotonic() < deadline:
            target = sync.getStatus().get("leader_commit_idx")
            if target is not None and target > 1 and sync.raftLastApplied >= target:
                # Let the once-a-second meta write record the commit index, so the voting node
                # replays everything at start (serves ?stale reads current at once).
                time.sleep(1.1)
                log.info("join: caught up to index %d as a read-only replica (%.1f s)",
                         target, time.monotonic() - started)
                return int(target)
            time.sleep(poll)
        raise TimeoutError(f"join: not caught up with the leader within {timeout:.0f} s")
    finally:
        sync.destroy_synchronous()
