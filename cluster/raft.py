"""The Raft node: PySyncObj on its own tick thread, bridged to asyncio.

Data flows one way: the event loop submits msgpack commands; the tick thread applies them to the
FSM and hands results back with `loop.call_soon_threadsafe`. Every replicated call has a timeout
(PySyncObj's callback mode has none, and callbacks can be lost), and every failure is sorted into
"not applied" (safe to retry) or "unknown outcome" (it may still commit later).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from .fsm import FSM, encode

log = logging.getLogger("peerplane.raft")

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2


class NotApplied(Exception):
    """The command was certainly not applied (no leader, queue full, discarded)."""


class UnknownOutcome(Exception):
    """The command may or may not have been applied (timeout, leader change mid-flight)."""


@dataclass(frozen=True)
class RaftTiming:
    """Timing chosen so a cut-off leader steps down before anyone can replace it.

    A follower can only start an election `election_min` after the last append_entries it
    received; the leader gives up `lease` after the last majority response. lease <
    election_min, so the old leader is gone first; default reads additionally check the lease
    at read time rather than trusting the tick thread to have noticed.
    """

    heartbeat: float = 0.05
    election_min: float = 1.0
    election_max: float = 2.0
    lease: float = 0.5
    batch: bool = False  # send appends immediately: ~1 ms commits instead of ~heartbeat


class _Replica(SyncObjConsumer):
    """The single replicated entry point. PySyncObj numbers replicated methods alphabetically,
    so there is exactly one and it never changes: commands are dispatched inside the FSM."""

    def __init__(self, fsm: FSM) -> None:
        self.fsm = fsm
        super().__init__()

    @replicated
    def apply(self, raw: bytes) -> dict[str, Any]:
        return self.fsm.apply(raw)

    # Snapshots hold the FSM's msgpack, not pickled Python objects of ours.
    def _serialize(self) -> dict[str, bytes]:
        return {"fsm": self.fsm.snapshot()}

    def _deserialize(self, data: dict[str, bytes]) -> None:
        self.fsm.restore(data["fsm"])


class _SyncObj(SyncObj):
    """SyncObj that also remembers when it last heard from a leader (for X-Consul-LastContact
    and max_stale); PySyncObj keeps no such timestamp on followers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before SyncObj.__init__ so PySyncObj treats it as non-replicated.
        self.last_leader_contact = 0.0
        super().__init__(*args, **kwargs)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("type") == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            self.last_leader_contact = time.monotonic()
        SyncObj._SyncObj__onMessageReceived(self, node, message)


class RaftNode:
    def __init__(
        self,
        *,
        self_addr: str,
        peers: list[str],
        bind_addr: str,
        data_dir: str,
        password: str,
        fsm: FSM,
        timing: RaftTiming = RaftTiming(),
        compaction_entries: int = 50_000,
    ) -> None:
        if not password:
            raise ValueError("a cluster password is required (PySyncObj unpickles its traffic)")
        os.makedirs(data_dir, exist_ok=True)
        self.fsm = fsm
        self.self_addr = self_addr
        self.timing = timing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state_waiters: list[asyncio.Event] = []
        self._barrier: asyncio.Future[int] | None = None
        self._next_barrier: asyncio.Future[int] | None = None
        conf = SyncObjConf(
            password=password,
            bindAddress=bind_addr,
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.dump"),
            appendEntriesUseBatch=timing.batch,
            appendEntriesPeriod=timing.heartbeat,
            raftMinTimeout=timing.election_min,
            raftMaxTimeout=timing.election_max,
            leaderFallbackTimeout=timing.lease,
            connectionTimeout=max(3.5, timing.election_max),
            connectionRetryTime=1.0,
            commandsWaitLeader=False,  # fail fast; the HTTP layer waits for a leader itself
            logCompactionMinEntries=compaction_entries,
            onStateChanged=self._on_state_changed,
        )
        self._replica = _Replica(fsm)
        self._sync = _SyncObj(self_addr, peers, conf, consumers=[self._replica])

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _on_state_changed(self, old: int, new: int) -> None:  # tick thread
        log.info("raft state %s -> %s", old, new)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_state_waiters)

    def _wake_state_waiters(self) -> None:
        for ev in self._state_waiters:
            ev.set()

    async def wait_state_change(self, timeout: float) -> None:
        ev = asyncio.Event()
        self._state_waiters.append(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._state_waiters.remove(ev)

    # ---- writes ----

    async def submit(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def _set(res: Any, err: int) -> None:
            if not fut.done():
                fut.set_result((res, err))

        def _callback(res: Any, err: int) -> None:  # tick thread, or caller on QUEUE_FULL
            try:
                loop.call_soon_threadsafe(_set, res, err)
            except RuntimeError:
                pass  # loop closed during shutdown

        self._replica.apply(encode(cmd), callback=_callback)
        try:
            res, err = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise UnknownOutcome("timed out waiting for the command to commit") from None
        if err == FAIL_REASON.SUCCESS:
            return res
        if err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
            raise UnknownOutcome(f"raft: {err}")
        raise NotApplied(f"raft: {err}")

    async def barrier(self, timeout: float) -> int:
        """Commit a no-op through the log; when it is applied here, every write acknowledged
        before this call is visible locally. Calls arriving while a barrier is in flight share
        the next one (it starts after they arrived, so it proves leadership for them too)."""
        if self._barrier is None:
            self._barrier = asyncio.ensure_future(self._run_barrier(timeout))
            fut = self._barrier
        else:
            if self._next_barrier is None:
                self._next_barrier = asyncio.ensure_future(self._chain_barrier(timeout))
            fut = self._next_barrier
        return await asyncio.shield(fut)

    async def _run_barrier(self, timeout: float) -> int:
        try:
            res = await self.submit({"op": "barrier"}, timeout)
            return int(res["index"])
        finally:
            self._barrier = None

    async def _chain_barrier(self, timeout: float) -> int:
        current = self._barrier
        if current is not None:
            await asyncio.wait([current])
        self._barrier, self._next_barrier = self._next_barrier, None
        try:
            res = await self.submit({"op": "barrier"}, timeout)
            return int(res["index"])
        finally:
            self._barrier = None

    # ---- the node's view of the cluster ----

    def is_leader(self) -> bool:
        return bool(self._sync._isLeader())

    def leader(self) -> str | None:
        node = self._sync._getLeader()
        return str(node) if node is not None else None

    def lease_holds(self) -> bool:
        """True while this node is leader, has applied its own term's no-op, and a majority
        answered it within the lease: the condition for serving default-mode reads."""
        s = self._sync
        if not s._isLeader():
            return False
        noop = s._SyncObj__noopIDx
        if noop is None or s.raftLastApplied < noop:
            return False
        deadline = time.monotonic() - self.timing.lease
        others = s.otherNodes
        times = s._SyncObj__lastResponseTime
        fresh = 1 + sum(1 for n in others if times.get(n, 0) > deadline)
        return fresh > (len(others) + 1) / 2

    def last_contact_ms(self) -> int:
        if self.is_leader():
            return 0
        last = self._sync.last_leader_contact
        if not last:
            return -1
        return int((time.monotonic() - last) * 1000)

    def is_ready(self) -> bool:
        return bool(self._sync.isReady())

    def status(self) -> dict[str, Any]:
        return self._sync.getStatus()

    def members(self) -> list[str]:
        return sorted([self.self_addr, *(str(n) for n in self._sync.otherNodes)])

    def applied_index(self) -> int:
        return int(self._sync.raftLastApplied)

    def destroy(self) -> None:
        self._sync.destroy_synchronous()
