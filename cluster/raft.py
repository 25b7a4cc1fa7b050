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
from collections import deque
from dataclasses import dataclass
from typing import Any

import pysyncobj.syncobj as _pysyncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.transport import TCPTransport

from . import metrics
from .fsm import FSM, encode
from .journal import ChecksummedJournal, JournalError, JournalPath

log = logging.getLogger("peerplane.raft")

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2
_JOURNAL_FAILED = "journal-failed"  # a submit's outcome when the journal failed meanwhile


class NotApplied(Exception):
    """The command was certainly not applied (no leader, queue full, discarded)."""


class UnknownOutcome(Exception):
    """The command may or may not have been applied (timeout, leader change mid-flight)."""


class DiskFault(NotApplied):
    """This server's journal cannot be written: it takes no part in Raft until it can."""


@dataclass(frozen=True)
class RaftTiming:
    """Timing chosen so a cut-off leader steps down before anyone can replace it.

    A follower neither starts an election nor grants a vote until `vote_guard` (just under
    `election_min`) after the last append_entries it received. The leader serves default reads
    only while a majority acknowledged a heartbeat it *sent* less than `lease` ago, and PySyncObj
    itself steps down after `lease` without responses. lease < vote_guard, so the old leader's
    lease always ends before anyone else can win an election.
    """

    heartbeat: float = 0.05
    election_min: float = 1.0
    election_max: float = 2.0
    lease: float = 0.5
    batch: bool = False  # send appends immediately: ~1 ms commits instead of ~heartbeat
    durable: bool = True  # fsync the journal before an entry counts toward a quorum

    @property
    def vote_guard(self) -> float:
        """No vote within this long of leader contact; must exceed the lease with margin."""
        return max(self.lease, self.election_min - 2 * self.heartbeat)


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


class LeaseTracker:
    """When did a majority last acknowledge something this leader *sent*?

    PySyncObj stamps responses with the time they are processed, which is unsafe for a lease:
    a leader that was paused (SIGSTOP, GC, swap) processes old acks on waking and would think
    it was just confirmed. Here every append_entries send time is queued per follower and each
    response pops the oldest one (TCP keeps order; each append_entries gets one response), so an
    ack proves the follower accepted this leader *at or after the popped send time*. Lost
    messages can only make the popped time older, i.e. the lease shorter, never longer.
    Written by the tick thread, read by the event loop (single dict operations, GIL-atomic).
    """

    def __init__(self) -> None:
        self._sent: dict[Any, deque[float]] = {}
        self.acked: dict[Any, float] = {}

    def on_sent(self, node: Any, at: float) -> None:
        self._sent.setdefault(node, deque(maxlen=100_000)).append(at)

    def on_response(self, node: Any) -> None:
        queue = self._sent.get(node)
        if queue:
            self.acked[node] = queue.popleft()

    def reset(self, node: Any) -> None:
        """A connection (re)started: whatever was in flight on the old one is lost."""
        self._sent.pop(node, None)

    def majority_since(self, others: Any, since: float) -> bool:
        fresh = 1 + sum(1 for n in others if self.acked.get(n, 0.0) > since)
        return fresh > (len(others) + 1) / 2


def _timed_transport(lease: LeaseTracker) -> Any:
    class _TimedTransport(TCPTransport):
        def send(self, node: Any, message: Any) -> bool:
            at = time.monotonic()
            ok = super().send(node, message)
            if ok and isinstance(message, dict) and message.get("type") == "append_entries":
                lease.on_sent(node, at)
            return ok

    return _TimedTransport


_create_journal = _pysyncobj.createJournal


def _journal_for(journal_file: Any) -> Any:
    """PySyncObj builds its journal itself (`createJournal(conf.journalFile)`); a JournalPath
    gets ours: write() + fdatasync instead of an mmap, CRC per entry (cluster/journal.py)."""
    if isinstance(journal_file, JournalPath):
        return ChecksummedJournal(journal_file)
    return _create_journal(journal_file)


_pysyncobj.createJournal = _journal_for


class PeerplaneSyncObj(SyncObj):
    """SyncObj plus the two things a leader lease needs and PySyncObj lacks:

    - followers remember when they last heard from a leader (X-Consul-LastContact, max_stale);
    - vote stickiness (Raft thesis §4.2.3): a server that heard from a leader within
      `vote_guard` - or is the leader - will adopt a higher term but not grant its vote. No new
      leader can therefore be elected while the old one's lease (< vote_guard) may still hold.
    """

    def __init__(
        self, *args: Any, lease: LeaseTracker, vote_guard: float, durable: bool, **kwargs: Any
    ) -> None:
        # Set before SyncObj.__init__ so PySyncObj treats them as non-replicated. A node that
        # has not heard a leader since it started may hold state of any age (a restart replays
        # an old journal): its contact counts from the clock's epoch, i.e. "very long ago".
        self.last_leader_contact = 0.0
        self.lease = lease
        self.vote_guard = vote_guard
        self.durable = durable
        self.draining = False
        self.send_deferred = False
        self.on_journal_failure: Any = None  # called once per failure, from the tick thread
        self._sitting_out = False
        self._next_recovery = 0.0
        super().__init__(*args, transportClass=_timed_transport(lease), **kwargs)

    # ---- a journal that cannot be written (disk full, I/O error) ----
    # Such a server takes no part in Raft: a leader steps down, nobody campaigns, append_entries
    # and vote requests are dropped unanswered (any answer would claim persistence it lacks).
    # Once a second it tries to rewrite its journal; when that works it is a follower again and
    # catches up from the leader like any lagging follower.

    def journal_failure(self) -> str | None:
        return self._SyncObj__raftLog.failure

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if self._SyncObj__raftLog.failure is not None:
            self._sit_out()
        try:
            SyncObj._onTick(self, timeToWait)
        except JournalError:
            time.sleep(timeToWait)  # the journal logged why; from the next tick on we sit out

    def _sit_out(self) -> None:
        now = time.monotonic()
        if not self._sitting_out:
            self._sitting_out = True
            if self._SyncObj__raftState == LEADER:
                self._SyncObj__setState(FOLLOWER)
                self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()  # forwarded commands: outcome unknown
            if self.on_journal_failure is not None:
                self.on_journal_failure()
        if now >= self._next_recovery:
            self._next_recovery = now + 1.0
            if self._SyncObj__raftLog.try_recover():
                self._sitting_out = False
        # Not before a full election timeout from now: first hear whether there is a leader.
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()

    # ---- group commit ----
    # With batching off PySyncObj sends append_entries once per queued command. Commands
    # drained in one tick are sent (and, when durable, synced) together instead: same latency,
    # one fsync and one message per follower for the whole batch.

    def _checkCommandsToApply(self) -> None:
        self.draining = True
        try:
            SyncObj._checkCommandsToApply(self)
        finally:
            self.draining = False
        if self.send_deferred:
            self.send_deferred = False
            self._SyncObj__sendAppendEntries()

    # ---- durability="fsync": nothing counts toward a quorum before it is on disk ----
    # A follower syncs its journal before acknowledging entries; the leader syncs before it
    # sends entries, so by the time a majority has acknowledged an entry, the leader's copy is
    # on disk too. Both run in the tick thread, so entries arriving together share one sync.

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,
                                  nextNodeIdx: Any = None, success: bool = False) -> None:
        if self.durable and success:
            self._SyncObj__raftLog.sync()  # raises JournalError: then nothing is acknowledged
        SyncObj._SyncObj__sendNextNodeIdx(self, node, reset, nextNodeIdx, success)

    def _SyncObj__sendAppendEntries(self) -> None:
        if self.draining:
            self.send_deferred = True
            return
        if self.durable:
            self._SyncObj__raftLog.sync()
        SyncObj._SyncObj__sendAppendEntries(self)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if self._sitting_out and kind in ("append_entries", "request_vote", "timeout_now"):
            return
        if kind == "next_node_idx":
            self.lease.on_response(node)
        elif kind == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            self.last_leader_contact = time.monotonic()
        elif kind == "request_vote" and (
            self._isLeader() or time.monotonic() - self.last_leader_contact < self.vote_guard
        ):
            # Take the term (and step down if leading) but make the vote impossible to grant:
            # PySyncObj refuses candidates whose last log term is older than ours.
            message = dict(message, last_log_term=-1)
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _SyncObj__onNodeConnected(self, node: Any) -> None:
        self.lease.reset(node)
        SyncObj._SyncObj__onNodeConnected(self, node)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        self.lease.reset(node)
        SyncObj._SyncObj__onNodeDisconnected(self, node)


def sync_conf(
    timing: RaftTiming, *, password: str, bind_addr: str, data_dir: str,
    compaction_entries: int = 50_000, **extra: Any,
) -> SyncObjConf:
    """PySyncObj's configuration for a peerplane server (also used by the raw-PySyncObj bench,
    so the anchor runs with exactly these settings)."""
    return SyncObjConf(
        password=password,
        bindAddress=bind_addr,
        journalFile=JournalPath(os.path.join(data_dir, "raft.journal")),
        fullDumpFile=os.path.join(data_dir, "raft.dump"),
        appendEntriesUseBatch=timing.batch,
        appendEntriesPeriod=timing.heartbeat,
        raftMinTimeout=timing.election_min,
        raftMaxTimeout=timing.election_max,
        leaderFallbackTimeout=timing.lease,
        connectionTimeout=max(3.5, timing.election_max),
        connectionRetryTime=1.0,
        commandsWaitLeader=False,  # fail fast; the HTTP layer waits for a leader itself
        # Containers may come back with another address: re-resolve peers quickly
        # (PySyncObj caches DNS for 10 minutes by default).
        dnsCacheTime=2.0,
        dnsFailCacheTime=1.0,
        logCompactionMinEntries=compaction_entries,
        **extra,
    )


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
        conf = sync_conf(
            timing, password=password, bind_addr=bind_addr, data_dir=data_dir,
            compaction_entries=compaction_entries, onStateChanged=self._on_state_changed,
        )
        self._replica = _Replica(fsm)
        self._lease = LeaseTracker()
        self._sync = PeerplaneSyncObj(
            self_addr, peers, conf, consumers=[self._replica], lease=self._lease,
            vote_guard=timing.vote_guard, durable=timing.durable,
        )
        self._pending: set[asyncio.Future[tuple[Any, Any]]] = set()
        self._sync.on_journal_failure = self._on_journal_failure

    def _on_journal_failure(self) -> None:  # tick thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fail_pending)

    def _fail_pending(self) -> None:
        """Commands in flight when the journal failed: whether they commit is unknown (a leader
        may have sent some before its write failed), so answer now instead of at the timeout."""
        for fut in self._pending:
            if not fut.done():
                fut.set_result((None, _JOURNAL_FAILED))

    def disk_failure(self) -> str | None:
        """Why this server's journal cannot be written, while it cannot (None otherwise)."""
        return self._sync.journal_failure()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _on_state_changed(self, old: int, new: int) -> None:  # tick thread
        log.info("raft state %s -> %s", old, new)
        if old == LEADER:
            # Until now this node was its own leader contact; staleness counts from here.
            self._sync.last_leader_contact = time.monotonic()
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
        if (why := self.disk_failure()) is not None:
            raise DiskFault(why)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, Any]] = loop.create_future()

        def _set(res: Any, err: int) -> None:
            if not fut.done():
                fut.set_result((res, err))

        def _callback(res: Any, err: int) -> None:  # tick thread, or caller on QUEUE_FULL
            try:
                loop.call_soon_threadsafe(_set, res, err)
            except RuntimeError:
                pass  # loop closed during shutdown

        started = time.perf_counter()
        op = str(cmd.get("op", ""))
        self._pending.add(fut)
        self._replica.apply(encode(cmd), callback=_callback)
        try:
            res, err = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            metrics.raft_apply(op, "unknown", time.perf_counter() - started)
            raise UnknownOutcome("timed out waiting for the command to commit") from None
        finally:
            self._pending.discard(fut)
        if err == FAIL_REASON.SUCCESS:
            metrics.raft_apply(op, "ok", time.perf_counter() - started)
            return res
        if err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME, _JOURNAL_FAILED):
            metrics.raft_apply(op, "unknown", time.perf_counter() - started)
            raise UnknownOutcome(f"raft: {err}")
        metrics.raft_apply(op, "not_applied", time.perf_counter() - started)
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

    async def read_index(self, timeout: float, poll: float = 0.002) -> int:
        """ReadIndex on PySyncObj's internals (the alternative to `barrier`): note the commit
        index, wait until a majority has answered this leader after the call began (heartbeats
        every `timing.heartbeat`), then until that index is applied here. No log entry, but up
        to one heartbeat of latency; see bench/read_modes.py for the comparison."""
        s = self._sync
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        deadline = loop.time() + timeout
        commit = s.raftCommitIndex
        while True:
            if not s._isLeader():
                raise NotApplied("not leader")
            noop = s._SyncObj__noopIDx
            applied = s.raftLastApplied
            if (noop is not None and applied >= noop and applied >= commit
                    and self._lease.majority_since(s.otherNodes, started)):
                return commit
            if loop.time() >= deadline:
                raise UnknownOutcome("no quorum answered in time")
            await asyncio.sleep(poll)

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
        return self._lease.majority_since(s.otherNodes, time.monotonic() - self.timing.lease)

    def last_contact_ms(self) -> int:
        if self.is_leader():
            return 0
        return int((time.monotonic() - self._sync.last_leader_contact) * 1000)

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
