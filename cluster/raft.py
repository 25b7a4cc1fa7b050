"""The Raft node: PySyncObj on its own tick thread, bridged to asyncio.

Data flows one way: the event loop submits msgpack commands; the tick thread applies them to the
FSM and hands results back through one ordered queue (`to_loop`: one loop wake-up per batch
of applies, a command's FSM change before its result). Every replicated call has a timeout
(PySyncObj's callback mode has none, and callbacks can be lost), and every failure is sorted into
"not applied" (safe to retry) or "unknown outcome" (it may still commit later).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pysyncobj import FAIL_REASON, SyncObjConf, SyncObjConsumer, replicated

from . import membership
from .commands import Batch, Command, encode
from .fsm import FSM
from .journal import JournalPath
from .lease import LeaseTracker
from .metrics import NO_EVENTS, Events
from .raft_wall import KEEPALIVE, PeerplaneSyncObj

log = logging.getLogger("peerplane.raft")

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2
# A submit's outcome when the journal failed meanwhile, or when this leader lost its quorum.
_JOURNAL_FAILED, _LOST_QUORUM = "journal-failed", "leader-lost-quorum"


_TIMED_OUT = (None, "timed-out")  # a call's outcome when its timeout passed first


def _set_result(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


# A log entry holds at most this many of the commands one pass of the event loop submitted,
# and (beyond the first) at most this many bytes of them.
BATCH_MAX = 64
BATCH_BYTES = 256 * 1024


def _entries(queued: list[Any]) -> Iterator[list[Any]]:
    """(raw, callback) pairs, in order, cut into log entries of at most BATCH_MAX commands
    and, beyond the first, BATCH_BYTES."""
    part: list[Any] = []
    size = 0
    for item in queued:
        if part and (len(part) == BATCH_MAX or size + len(item[0]) > BATCH_BYTES):
            yield part
            part, size = [], 0
        part.append(item)
        size += len(item[0])
    if part:
        yield part


def _fan_out(callbacks: list[Callable[[Any, int], None]]) -> Callable[[Any, int], None]:
    """One Batch entry's callback -> each command's: its own result from the batch's list; a
    failure (not applied, outcome unknown) is every command's."""
    def callback(res: Any, err: int) -> None:
        results = res.get("results") if err == FAIL_REASON.SUCCESS and isinstance(
            res, dict) else None
        if isinstance(results, list) and len(results) == len(callbacks):
            for cb, result in zip(callbacks, results, strict=True):
                cb(result, err)
            return
        if err == FAIL_REASON.SUCCESS:  # an FSM that does not know batches answered
            res = res if isinstance(res, dict) and "error" in res else {
                "error": "invalid batch result", "kind": "invalid"}
        for cb in callbacks:
            cb(res, err)
    return callback


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


@dataclass
class _PendingRead:
    started: float  # monotonic time the read arrived
    commit: int  # the leader's commit index then
    done: asyncio.Future[int]


@dataclass
class _ReadRequest:
    """One read-index request a follower sent to its leader: it covers every read that arrived
    before it was sent (`waiters`); reads arriving later go in the next one."""

    id: int
    leader: Any  # the PySyncObj Node it went to
    waiters: list[asyncio.Future[int]]


class ForkedSnapshot:
    """The FSM's snapshot, taken when PySyncObj's serializer pickles it - in the child it forks
    for that, from the tick thread between two applies - and pickled as the plain bytes it
    always was. The tick thread (which holds the GIL for the event loop too) no longer spends
    the ~0.1 s a snapshot of 50,000 peerings takes."""

    def __init__(self, fsm: FSM) -> None:
        self.fsm, self.pid = fsm, os.getpid()

    def __reduce__(self) -> tuple[type[bytes], tuple[bytes]]:
        forked = os.getpid() != self.pid
        return bytes, (self.fsm.snapshot_unlocked() if forked else self.fsm.snapshot(),)


class Replica(SyncObjConsumer):
    """The single replicated entry point. PySyncObj numbers replicated methods alphabetically,
    so there is exactly one and it never changes: commands are dispatched inside the FSM."""

    def __init__(self, fsm: FSM) -> None:
        self.fsm = fsm
        super().__init__()

    @replicated
    def apply(self, raw: bytes) -> dict[str, Any]:
        return self.fsm.apply(raw)

    # Snapshots hold the FSM's msgpack, not pickled Python objects of ours.
    def _serialize(self) -> dict[str, Any]:
        return {"fsm": ForkedSnapshot(self.fsm)}

    def _deserialize(self, data: dict[str, bytes]) -> None:
        self.fsm.restore(data["fsm"])


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
        dynamicMembershipChange=True,  # join / remove-peer (cluster/membership.py)
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
        events: Events = NO_EVENTS,
    ) -> None:
        if not password:
            raise ValueError("a cluster password is required (PySyncObj unpickles its traffic)")
        os.makedirs(data_dir, exist_ok=True)
        self.fsm = fsm
        self.events = events  # what Metrics records (cluster/metrics.py)
        self.self_addr = self_addr
        self.timing = timing
        self._loop: asyncio.AbstractEventLoop | None = None
        # Tick thread -> loop hand-over (`to_loop`): deque append/popleft are atomic.
        self._outbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._outbox_scheduled = False
        # Commands submitted in this pass of the event loop, with their callbacks (`_apply`).
        self._queued: list[tuple[bytes, Callable[[Any, int], None]]] = []
        self.entries_proposed = 0  # log entries `_flush` handed to PySyncObj (tests)
        self._state_listeners: list[Callable[[], None]] = []
        self._reads: list[_PendingRead] = []
        self._reads_check_scheduled = False
        self._round_started: float | None = None
        self.read_rounds = 0  # heartbeat rounds requested for ReadIndex (metrics, tests)
        conf = sync_conf(
            timing, password=password, bind_addr=bind_addr, data_dir=data_dir,
            compaction_entries=compaction_entries, onStateChanged=self._on_state_changed,
        )
        self._replica = Replica(fsm)
        self._lease = LeaseTracker()
        self.data_dir = data_dir
        # The servers this node last knew win over the configured ones (see membership.py).
        known = membership.load_servers(data_dir)
        if known is None:
            membership.store_servers(data_dir, [self_addr, *peers])
        else:
            peers = [s for s in known if s != self_addr]
        self._sync = PeerplaneSyncObj(
            self_addr, peers, conf, consumers=[self._replica], lease=self._lease,
            vote_guard=timing.vote_guard, durable=timing.durable, on_ack=self._poke_reads,
            on_membership=self._membership_changed,
        )
        fsm.add_listener(self._poke_reads)
        self._init_follower_reads()
        self._pending: set[asyncio.Future[tuple[Any, Any]]] = set()
        self._sync.on_journal_failure = self._on_journal_failure

    def _on_journal_failure(self) -> None:  # tick thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fail_pending)

    def _fail_pending(self, why: str = _JOURNAL_FAILED) -> None:
        """Answer commands still in flight now instead of at their timeout: their outcome is
        unknown (the journal failed; or this leader lost its quorum, and a new leader may or may
        not have the entries it sent before)."""
        for fut in self._pending:
            if not fut.done():
                fut.set_result((None, why))

    def disk_failure(self) -> str | None:
        """Why this server's journal cannot be written, while it cannot (None otherwise)."""
        return self._sync.journal_failure()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            loop.call_soon_threadsafe(self._refresh_leader_state)
        if loop is not self._loop:  # what was handed to another loop is moot
            self._outbox.clear()
            self._outbox_scheduled = False
        self._loop = loop

    def _on_state_changed(self, old: int, new: int) -> None:  # tick thread
        log.info("raft state %s -> %s", old, new)
        loop = self._loop
        if old == LEADER:
            # Until now this node was its own leader contact; staleness counts from here.
            self._sync.last_leader_contact = time.monotonic()
            cut_off = not self._lease.majority_since(
                self._sync.otherNodes, time.monotonic() - self.timing.lease)
            if cut_off and loop is not None and not loop.is_closed():
                # Stepped down for lack of a quorum: its pending writes cannot commit here, so
                # their clients hear now (503 outcome unknown) and can go to the new leader.
                # (Deposed by a higher term while connected, they usually still commit.)
                loop.call_soon_threadsafe(self._fail_pending, _LOST_QUORUM)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._state_changed)
        self._poke_reads()

    def _state_changed(self) -> None:
        for fn in list(self._state_listeners):
            fn()

    def on_state_change(self, fn: Callable[[], None]) -> None:
        """Call `fn` on the event loop after every Raft state change (leader routines start
        and stop on these; they read `is_leader()` when called)."""
        self._state_listeners.append(fn)

    # ---- tick thread -> event loop ----

    def to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the event loop (from any thread), in order with every other
        `to_loop` call. Calls made while a drain is already scheduled ride along with it: one
        loop wake-up per batch of applies (a group commit applies many), not one per call."""
        self._outbox.append((fn, args))
        if self._outbox_scheduled:
            # Read after the append: a drain that cleared the flag after that still finds it.
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self._outbox.clear()
            return
        self._outbox_scheduled = True
        try:
            loop.call_soon_threadsafe(self._drain_outbox)
        except RuntimeError:  # loop closed during shutdown
            self._outbox.clear()
            self._outbox_scheduled = False

    def _drain_outbox(self) -> None:
        self._outbox_scheduled = False  # before draining: a later append schedules a drain
        box = self._outbox
        while box:
            fn, args = box.popleft()
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one failing callback must not drop the rest
                log.exception("callback from the tick thread failed")

    # ---- writes ----

    async def _call(self, start: Callable[[Callable[[Any, int], None]], None],
                    timeout: float) -> tuple[Any, Any]:
        """Start a PySyncObj call with a callback and await (result, FAIL_REASON); a timeout
        raises UnknownOutcome (the call may still take effect later)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, Any]] = loop.create_future()

        def _callback(res: Any, err: int) -> None:  # tick thread, or caller on QUEUE_FULL
            if self._loop is loop:
                self.to_loop(_set_result, fut, (res, err))
                return
            try:  # a loop this node was not attached to (tests)
                loop.call_soon_threadsafe(_set_result, fut, (res, err))
            except RuntimeError:
                pass  # loop closed during shutdown

        self._pending.add(fut)
        start(_callback)
        # One timer, not wait_for's (a waiter future, a done-callback and a timer per call).
        timer = loop.call_later(timeout, _set_result, fut, _TIMED_OUT)
        try:
            outcome = await fut
        finally:
            timer.cancel()
            self._pending.discard(fut)
        if outcome is _TIMED_OUT:
            raise UnknownOutcome("timed out waiting for the command to commit")
        return outcome

    def _apply(self, raw: bytes, callback: Callable[[Any, int], None]) -> None:
        """Queue a command for this pass of the event loop: `_flush`, run once after the
        pass, sends what was queued as one log entry (a Batch) and wakes the tick thread once."""
        if not self._queued:
            self._sync.hold_wakeups()
            asyncio.get_running_loop().call_soon(self._flush)
        self._queued.append((raw, callback))

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        try:
            for part in _entries(queued):
                self.entries_proposed += 1
                if len(part) == 1:
                    self._replica.apply(part[0][0], callback=part[0][1])
                else:
                    self._replica.apply(encode(Batch(commands=[raw for raw, _ in part])),
                                        callback=_fan_out([cb for _, cb in part]))
        finally:
            self._sync.release_wakeups()  # nothing to release when none were held

    async def submit(self, cmd: Command, timeout: float) -> dict[str, Any]:
        """Raft transport of one command (callers use cluster/proposer.py)."""
        if (why := self.disk_failure()) is not None:
            raise DiskFault(why)
        started = time.perf_counter()
        op = cmd.op
        raw = encode(cmd)
        try:
            res, err = await self._call(lambda cb: self._apply(raw, cb), timeout)
        except UnknownOutcome:
            self.events.raft_apply(op, "unknown", time.perf_counter() - started)
            raise
        if err == FAIL_REASON.SUCCESS:
            self.events.raft_apply(op, "ok", time.perf_counter() - started)
            return res
        if err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME, _JOURNAL_FAILED,
                   _LOST_QUORUM):
            self.events.raft_apply(op, "unknown", time.perf_counter() - started)
            raise UnknownOutcome(f"raft: {err}")
        self.events.raft_apply(op, "not_applied", time.perf_counter() - started)
        raise NotApplied(f"raft: {err}")

    # ---- membership (one change at a time; PySyncObj refuses a second while one is pending) ----

    async def remove_server(self, addr: str, timeout: float) -> None:
        """Remove a server from the Raft configuration (on the leader)."""
        await self._change_membership(self._sync.removeNodeFromCluster, addr, timeout)

    async def add_server(self, addr: str, timeout: float) -> None:
        await self._change_membership(self._sync.addNodeToCluster, addr, timeout)

    async def _change_membership(self, change: Callable[..., None], addr: str,
                                 timeout: float) -> None:
        if (why := self.disk_failure()) is not None:
            raise DiskFault(why)
        _, err = await self._call(lambda cb: change(addr, callback=cb), timeout)
        if err == FAIL_REASON.REQUEST_DENIED:
            raise NotApplied("a membership change is already in progress")
        if err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME, _JOURNAL_FAILED,
                   _LOST_QUORUM):
            raise UnknownOutcome(f"raft: {err}")
        if err != FAIL_REASON.SUCCESS:
            raise NotApplied(f"raft: {err}")

    def _membership_changed(self, servers: list[str]) -> None:  # tick thread
        log.info("raft membership: %s", ", ".join(servers))
        membership.store_servers(self.data_dir, servers)

    async def read_index(self, timeout: float) -> int:
        """ReadIndex (Raft thesis §6.4; Consul's VerifyLeader, etcd's default read): note the
        commit index, have a heartbeat round sent at once, and return when a majority has
        acknowledged a heartbeat sent after this call began and the noted index is applied
        here. Reads arriving together share one round; no log entry, no fsync."""
        if not self._sync._isLeader():
            raise NotApplied("not leader")
        read = self._queue_read()
        try:
            return await asyncio.wait_for(asyncio.shield(read.done), timeout)
        except TimeoutError:
            raise UnknownOutcome("no quorum answered in time") from None
        finally:
            if not read.done.done():
                read.done.cancel()

    def _queue_read(self) -> _PendingRead:
        """A read waiting for the next quorum round (started now unless one is in flight)."""
        loop = asyncio.get_running_loop()
        read = _PendingRead(time.monotonic(), self._sync.raftCommitIndex, loop.create_future())
        self._reads.append(read)
        if self._round_started is None:  # else it waits for the next round, with others
            self._start_round()
        return read

    def _start_round(self) -> None:
        self._round_started = time.monotonic()
        self.read_rounds += 1
        self._sync.request_round()

    def _poke_reads(self, *_: Any) -> None:  # tick thread: an ack, an apply, a state change
        self._check_follower_requests()
        loop = self._loop
        if self._reads and not self._reads_check_scheduled and loop is not None:
            self._reads_check_scheduled = True
            try:
                loop.call_soon_threadsafe(self._check_reads)
            except RuntimeError:
                pass  # loop closed during shutdown

    def _check_reads(self) -> None:
        self._reads_check_scheduled = False
        s = self._sync
        if not s._isLeader():
            for read in self._reads:
                if not read.done.done():
                    read.done.set_exception(NotApplied("not leader"))
            self._reads, self._round_started = [], None
            return
        if not s.own_term_noop_applied():
            return
        others, applied = s.otherNodes, s.raftLastApplied
        # A leader's commit index may lag what earlier leaders committed until its own no-op
        # commits: the index answered is never below that no-op (a follower serves from it).
        floor = s.noop_index()
        waiting = []
        for read in self._reads:
            if read.done.done():
                continue
            if applied >= read.commit and self._lease.majority_since(others, read.started):
                read.done.set_result(max(read.commit, floor))
            else:
                waiting.append(read)
        self._reads = waiting
        # One round in flight at a time: reads that arrived during it share the next one.
        if self._round_started is not None and self._lease.majority_since(
                others, self._round_started):
            self._round_started = None
        if waiting and self._round_started is None:
            self._start_round()

    # ---- follower reads (etcd's follower ReadIndex, Raft thesis §6.4) ----
    # A follower serving a default or ?consistent read asks the leader for a read index over the
    # PySyncObj link (cluster/raft_wall/ carries the messages), waits until it has applied that
    # index, and serves from its own FSM. The leader answers a `lease` request at once with its
    # commit index while its lease holds; otherwise, and for ?consistent, after a quorum round
    # that started after the request arrived (rounds are requested with the same flag as its
    # own reads', so one send serves both). It does so in the tick thread, where requests
    # arrive and answers leave: a busy event loop on the leader delays no follower. Either
    # way the index is at least the commit index of every write acknowledged before the read
    # arrived at the follower, and a deposed leader cannot answer (no lease, no quorum). Which
    # server answers does not matter beyond that: committed entries are the same everywhere.

    def _init_follower_reads(self) -> None:
        self._remote_ids = itertools.count(1)
        self._remote_waiting: dict[bool, list[asyncio.Future[int]]] = {False: [], True: []}
        # requests in flight, by id (several: a request does not wait for the one before)
        self._remote_sent: dict[bool, dict[int, _ReadRequest]] = {False: {}, True: {}}
        self._remote_scheduled = {False: False, True: False}  # a send is due this loop pass
        # (index, seq, future) of reads waiting until this server has applied `index`
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._applied_wanted = 0  # lowest index waited for (0: none); read by the tick thread
        self._applied_check_scheduled = False
        self.read_requests_sent = 0  # read-index requests this follower sent (tests)
        self.read_requests_answered = 0  # read-index requests this leader answered (tests)
        # Live state only the leader has (peering stream status): its answers carry a copy
        # when it changed (or once a second), so a follower renders what the leader would.
        self.leader_state: Callable[[], Any] | None = None  # the leader's side: a snapshot
        self._leader_state_sent: dict[Any, tuple[Any, float]] = {}  # follower -> (copy, when)
        self._leader_state_copy: tuple[Any, Any] | None = None  # (sender, copy), on a follower
        self._leader_state_snapshot: Any = None  # the leader's, refreshed by the event loop
        # On the leader, tick thread only: requests waiting for a quorum round (follower node,
        # request id, lease, commit index on arrival, arrival time), and when the round in
        # flight for them was requested.
        self._follower_requests: list[tuple[Any, Any, bool, int, float]] = []
        self._follower_round: float | None = None
        self._sync.on_read_message = self._on_read_message
        self._sync.addOnTickCallback(self._tick_applied)

    async def follower_read_index(self, lease: bool, timeout: float) -> int:
        """The leader's read index for a read that arrived now, once this server has applied it
        (`lease`: a default-mode read, answered under the leader's lease when it holds).
        NotApplied when there is no leader to ask, or it refused or did not answer within
        about a second (retry); UnknownOutcome when the answer, or applying it here, took
        longer than `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        leader = self._sync._getLeader()
        if leader is None or self.is_leader():
            raise NotApplied("no leader to ask")
        fut: asyncio.Future[int] = loop.create_future()
        self._remote_waiting[lease].append(fut)
        sent = self._remote_sent[lease]
        # Asked a server that no longer leads: ask the new leader, for those reads too.
        for stale in [i for i, r in sent.items() if r.leader != leader]:
            self._remote_waiting[lease].extend(sent.pop(stale).waiters)
        if not self._remote_scheduled[lease]:
            # Sent at the end of this pass of the event loop: reads arriving together share it.
            self._remote_scheduled[lease] = True
            loop.call_soon(self._send_read_request, lease)
        # No timer per read: a request unanswered for a while is given up as a whole
        # (`_read_request_lost`), and its reads retry within the caller's hold time.
        index = await fut
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UnknownOutcome("the leader did not answer the read-index request in time")
        await self.wait_applied(index, remaining)
        return index

    def _send_read_request(self, lease: bool) -> None:
        """One request for the reads that arrived in this pass of the event loop. It does not
        wait for requests still in flight (etcd's ReadIndex does not either): a read waits one
        round trip, not the rest of an earlier one first."""
        self._remote_scheduled[lease] = False
        waiters = [f for f in self._remote_waiting[lease] if not f.done()]
        self._remote_waiting[lease] = []
        leader = self._sync._getLeader()
        if not waiters:
            return
        if leader is None or self.is_leader():
            for f in waiters:
                f.set_exception(NotApplied("no leader to ask"))
            return
        request = _ReadRequest(next(self._remote_ids), leader, waiters)
        self._remote_sent[lease][request.id] = request
        self.read_requests_sent += 1
        self._sync.send_read_message(
            leader, {"type": "read_index", "id": request.id, "lease": lease})
        # An answer lost with its connection never comes: give up on it after a while (the
        # reads retry, within their hold time).
        asyncio.get_running_loop().call_later(
            max(1.0, 2 * self.timing.lease), self._read_request_lost, lease, request.id)

    def _read_request_lost(self, lease: bool, request_id: int) -> None:
        request = self._remote_sent[lease].pop(request_id, None)
        if request is not None:
            self._settle(request, None)

    def _answer_read_request(self, lease: bool, request_id: int, index: int | None,
                             node: Any) -> None:
        """The answer to an outstanding request (index None: refused). A granted index also
        answers every request sent before it to the same leader: their reads arrived earlier
        still, and the index is at least the commit index when this request reached it."""
        sent = self._remote_sent[lease]
        request = sent.get(request_id)
        if request is None or node != request.leader:
            return  # an answer to a request given up on, or from a server not asked
        if index is None:
            self._settle(sent.pop(request_id), None)
            return
        for earlier in [i for i, r in sent.items() if i <= request_id and r.leader == node]:
            self._settle(sent.pop(earlier), index)

    @staticmethod
    def _settle(request: _ReadRequest, index: int | None) -> None:
        for f in request.waiters:
            if f.done():
                continue
            if index is None:
                f.set_exception(NotApplied("the leader refused the read-index request"))
            else:
                f.set_result(index)

    def _on_read_message(self, node: Any, message: dict[str, Any]) -> None:  # tick thread
        if message["type"] == "read_index":
            self._on_follower_request(node, message)  # answered here, without the event loop
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._read_message, node, message)
        except RuntimeError:
            pass  # loop closed during shutdown

    def _read_message(self, node: Any, message: dict[str, Any]) -> None:
        """A leader's answer to this follower's request (on the event loop)."""
        if "state" in message:
            self._leader_state_copy = (node, message["state"])
        index = message.get("index")
        self._answer_read_request(bool(message.get("lease")), message.get("id"),
                                  index if isinstance(index, int) else None, node)

    def _answer_follower(self, node: Any, request_id: Any, lease: bool,
                         index: int | None) -> None:  # tick thread
        answer = {"type": "read_index_response", "id": request_id, "lease": lease,
                  "index": index}
        if index is not None:
            self.read_requests_answered += 1
            self._add_leader_state(node, answer)
        self._sync.send_read_message_now(node, answer)

    def _on_follower_request(self, node: Any, message: dict[str, Any]) -> None:  # tick thread
        request_id, lease, s = message.get("id"), bool(message.get("lease")), self._sync
        if not s._isLeader():
            self._answer_follower(node, request_id, lease, None)
        elif lease and self.lease_holds():
            self._answer_follower(node, request_id, lease, int(s.raftCommitIndex))
        else:
            self._follower_requests.append(
                (node, request_id, lease, int(s.raftCommitIndex), time.monotonic()))
            if self._follower_round is None:  # else the next round, with those arriving meanwhile
                self._start_follower_round()

    def _start_follower_round(self) -> None:  # tick thread
        self._follower_round = time.monotonic()
        self._sync.request_round()

    def _check_follower_requests(self) -> None:  # tick thread: an ack, a state change, a tick
        waiting = self._follower_requests
        if not waiting:
            return
        s, now = self._sync, time.monotonic()
        if not s._isLeader():
            self._follower_requests, self._follower_round = [], None
            for node, request_id, lease, _, _ in waiting:
                self._answer_follower(node, request_id, lease, None)
            return
        if not s.own_term_noop_applied():
            return
        # As for the leader's own reads: never below this leader's own no-op (`_check_reads`).
        others, floor, still = s.otherNodes, s.noop_index(), []
        give_up = max(2.0, 4 * self.timing.lease)  # a leader without a quorum steps down sooner
        for request in waiting:
            node, request_id, lease, commit, started = request
            if self._lease.majority_since(others, started):
                self._answer_follower(node, request_id, lease, max(commit, floor))
            elif now - started > give_up:
                self._answer_follower(node, request_id, lease, None)
            else:
                still.append(request)
        self._follower_requests = still
        if self._follower_round is not None and self._lease.majority_since(
                others, self._follower_round):
            self._follower_round = None
        if still and self._follower_round is None:
            self._start_follower_round()

    def _refresh_leader_state(self) -> None:
        """The event loop's copy of the leader's live state (it changes on the loop), which
        the tick thread sends along with its answers; refreshed every 0.2 s while leading."""
        loop = self._loop
        if self.leader_state is not None and self.is_leader():
            state = self.leader_state()
            if state != self._leader_state_snapshot:
                self._leader_state_snapshot = state
        if loop is not None and not loop.is_closed():
            try:
                loop.call_later(0.2, self._refresh_leader_state)
            except RuntimeError:
                pass  # another loop runs now (tests attach one per asyncio.run)

    def _add_leader_state(self, node: Any, answer: dict[str, Any]) -> None:  # tick thread
        state, now = self._leader_state_snapshot, time.monotonic()
        if state is None:
            return
        sent = self._leader_state_sent.get(node)
        if sent is None or sent[0] is not state or now - sent[1] > 1.0:
            self._leader_state_sent[node] = (state, now)
            answer["state"] = state

    def leader_state_seen(self) -> Any:
        """On a follower: the leader's live state as its last read-index answer carried it
        (None when that came from a server that no longer leads, or never came)."""
        copy = self._leader_state_copy
        if copy is None or copy[0] != self._sync._getLeader():
            return None
        return copy[1]

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Return once this server has applied the log up to `index` (UnknownOutcome when it
        has not within `timeout`)."""
        s = self._sync
        if s.raftLastApplied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, id(fut), fut))
        self._applied_wanted = self._applied_waiters[0][0]
        if s.raftLastApplied >= index:  # applied meanwhile (the tick thread saw no waiter)
            self._check_applied()
        try:
            await asyncio.wait_for(fut, max(timeout, 0.0))
        except TimeoutError:
            raise UnknownOutcome("this server did not apply the read index in time") from None

    def _tick_applied(self) -> None:  # tick thread: after each tick's applies
        self._check_follower_requests()  # (those given up on)
        wanted, loop = self._applied_wanted, self._loop
        if (wanted and not self._applied_check_scheduled and loop is not None
                and self._sync.raftLastApplied >= wanted):
            self._applied_check_scheduled = True
            try:
                loop.call_soon_threadsafe(self._check_applied)
            except RuntimeError:
                pass  # loop closed during shutdown

    def _check_applied(self) -> None:
        self._applied_check_scheduled = False
        applied, waiters = self._sync.raftLastApplied, self._applied_waiters
        while waiters and (waiters[0][0] <= applied or waiters[0][2].done()):
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)
        self._applied_wanted = waiters[0][0] if waiters else 0

    # ---- the node's view of the cluster ----

    def is_leader(self) -> bool:
        return bool(self._sync._isLeader())

    def leader(self) -> str | None:
        node = self._sync._getLeader()
        return str(node) if node is not None else None

    def heard_within(self, addr: str, seconds: float) -> bool:
        """A message came from the server at `addr` within `seconds` (or this one started
        less than that ago)."""
        return bool(self._sync.heard_within(addr, seconds))

    def cut_off(self) -> bool:
        """A follower that hears neither its leader nor a quorum: a request waiting here for a
        leader cannot be served before the network changes, so it is answered (503) at once."""
        return not self.is_leader() and not self.in_touch(self.leader())

    def in_touch(self, leader: str | None) -> bool:
        """Could a request waiting here for `leader` (or, with None, for an election) still be
        served before the network changes? Yes while this server hears from that leader or from
        enough peers to form a majority with itself (an election can complete, or a new leader
        will be heard of). A server cut off from both answers at once instead of holding
        clients for the hold time: they can go to a server that is in touch."""
        s, within = self._sync, 2 * KEEPALIVE
        if leader is not None and s.heard_within(leader, within):
            return True
        others = [str(n) for n in s.otherNodes]
        heard = 1 + sum(1 for n in others if s.heard_within(n, within))
        return heard > (len(others) + 1) / 2

    def lease_holds(self) -> bool:
        """True while this node is leader, has applied its own term's no-op, and a majority
        answered it within the lease: the condition for serving default-mode reads."""
        s = self._sync
        if not s._isLeader():
            return False
        if not s.own_term_noop_applied():
            return False
        return self._lease.majority_since(s.otherNodes, time.monotonic() - self.timing.lease)

    def election_delay(self) -> float:
        """Seconds from the last leader contact until this server campaigns (if it hears no
        leader before then)."""
        return self._sync.election_due() - self._sync.last_leader_contact

    def last_contact_ms(self) -> int:
        if self.is_leader():
            return 0
        return int((time.monotonic() - self._sync.last_leader_contact) * 1000)

    def status(self) -> dict[str, Any]:
        return self._sync.getStatus()

    def tick_wakeups(self) -> int:
        """Times the event loop woke PySyncObj's tick thread for queued commands (or rounds)."""
        return self._sync.wakeups.written if self._sync.wakeups is not None else 0

    def backtracks(self) -> int:
        """Appends this server refused because its log diverged from the leader's there."""
        return int(self._sync.backtracks)

    def entries_received(self) -> int:
        """Log entries this node received from leaders, resent ones included."""
        return int(self._sync.entries_received)

    def members(self) -> list[str]:
        return self._sync.servers()

    def applied_index(self) -> int:
        return int(self._sync.raftLastApplied)

    def destroy(self) -> None:
        self._sync.destroy_synchronous()
