"""`PeerplaneSyncObj`: the SyncObj methods the wall overrides (see the class docstring)."""

from __future__ import annotations

import queue
import random
import time
from collections import deque
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.tcp_connection import CONNECTION_STATE

from ..journal import JournalError
from ..lease import LeaseTracker
from .hooks import HeldWakeups, timed_transport
from .internals import check_internals

_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2  # PySyncObj's _RAFT_STATE values
_CONNECTING = CONNECTION_STATE.CONNECTING
# A campaign that has not won within this long is retried (after a new pre-vote round).
CAMPAIGN_RETRY = (0.15, 0.45)
KEEPALIVE = 1.0  # seconds between keepalives on links that carry no Raft traffic
CONNECT_TIMEOUT = 1.0  # a connect not answered by then is abandoned and tried afresh
READ_MESSAGES = ("read_index", "read_index_response")  # follower reads (ours, not PySyncObj's)
# Each server compacts after its own random share of the configured entries / seconds.
COMPACTION_SPREAD = (0.75, 1.25)
SNAPSHOT_CHECK = 0.05  # seconds between looks at whether the snapshot's child has exited


class PeerplaneSyncObj(SyncObj):
    """SyncObj plus the things a leader lease and fsync durability need and PySyncObj lacks:

    - followers remember when they last heard from a leader (X-Consul-LastContact, max_stale);
    - vote stickiness (Raft thesis §4.2.3): a server that heard from a leader within
      `vote_guard` - or is the leader - will adopt a higher term but not grant its vote. No new
      leader can therefore be elected while the old one's lease (< vote_guard) may still hold;
    - the journal (and term/vote meta) fsynced before an entry counts toward a quorum;
    - group commit: commands drained in one tick are sent, and synced, together;
    - a journal that cannot be written takes the server out of Raft until it can.
    """

    def __init__(
        self, *args: Any, lease: LeaseTracker, vote_guard: float, durable: bool,
        on_ack: Any = None, on_membership: Any = None, **kwargs: Any,
    ) -> None:
        check_internals()  # the overrides below call SyncObj's own methods
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
        self._next_keepalive = 0.0
        self._next_snapshot_check = 0.0
        self._started = time.monotonic()
        self.last_heard: dict[str, float] = {}  # peer address -> when a message last came
        self.round_requested = False
        self.rounds_sent = 0  # append_entries rounds sent at once for ReadIndex (tests)
        self._pre_vote_term = self._pre_vote_won = -1
        self._campaign_term = -1  # the term of this server's latest campaign
        self._pre_votes: set[str] = set()
        self.entries_received = 0  # log entries that arrived in append_entries (resends too)
        self.backtracks = 0  # appends refused for a term mismatch (a log that diverged here)
        self.command_messages_sent = 0  # messages carrying this follower's commands (tests)
        self.response_messages_sent = 0  # messages answering followers' commands (tests)
        self.answers_carried = 0  # answers to a follower's batch carried by an append (tests)
        self.wakeups: HeldWakeups | None = None
        # A follower's acks of the appends read in one poll, sent after one fsync (_flush_acks)
        self._held_acks: list[tuple[Any, Any]] = []
        self._held_from: tuple[Any, int] | None = None  # (leader node, term) they answer
        self.ack_syncs = 0  # fsyncs made for held acks (tests)
        self.acks_sent = 0  # acks of synced appends (tests)
        self.on_ack = on_ack  # called in the tick thread when a follower answers
        # called in the tick thread with the servers after a membership change
        self.on_membership = on_membership
        self._init_follower_reads()
        super().__init__(*args, transportClass=timed_transport(lease), **kwargs)
        conf = self._SyncObj__conf
        self._compaction_base = (conf.logCompactionMinEntries, conf.logCompactionMinTime)
        self._draw_compaction_point()
        pipe = getattr(self, "_SyncObj__pipeNotifier", None)  # None with batching on
        self.wakeups = HeldWakeups(pipe) if pipe is not None else None
        if self.wakeups is not None:
            self._SyncObj__pipeNotifier = self.wakeups

    def servers(self) -> list[str]:
        """This server and its peers, as addresses."""
        return sorted([str(self.selfNode), *(str(n) for n in self.otherNodes)])

    def own_term_noop_applied(self) -> bool:
        """A leader has applied the no-op of its own term: its state includes every entry any
        earlier leader committed (the precondition of lease and ReadIndex reads)."""
        noop = self._SyncObj__noopIDx
        return noop is not None and self.raftLastApplied >= noop

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
        self._send_read_messages()
        now = time.monotonic()
        if now >= self._next_keepalive:
            self._next_keepalive = now + KEEPALIVE
            self._keep_links_read()
            self._abandon_stalled_connects()
        self._pre_vote_gate(raft_clock())  # PySyncObj's deadlines are on its own clock
        try:
            SyncObj._onTick(self, timeToWait)
            if self._held_acks:
                # Entries the leader has committed are applied before this server syncs the
                # new ones it just got: a follower's own writes answer an fsync sooner.
                self._SyncObj__applyLogEntries()
            self._flush_acks()
        except JournalError:
            self._held_acks.clear()  # not on disk: acknowledge nothing
            time.sleep(timeToWait)  # the journal logged why; from the next tick on we sit out
        self._shorten_campaign()

    # ---- log compaction, staggered across servers ----
    # Every server holds the same log, so with one threshold all of them forked and dumped
    # their state in the same tick: a commit needed a server that was not compacting, and
    # there was none (at 10,000 peerings each fork stalls its server ~0.2 s). Each server now
    # draws its own threshold - entries and seconds, 0.75-1.25x the configured ones - again
    # after each compaction, so two servers rarely compact at once and a quorum keeps going.

    def _draw_compaction_point(self) -> None:
        entries, seconds = self._compaction_base
        conf = self._SyncObj__conf
        conf.logCompactionMinEntries = max(2, int(entries * random.uniform(*COMPACTION_SPREAD)))
        conf.logCompactionMinTime = seconds * random.uniform(*COMPACTION_SPREAD)

    def _SyncObj__tryLogCompaction(self) -> None:
        # While the snapshot's child runs (~0.5 s at 30,000 peerings), PySyncObj asks the
        # kernel on every tick whether it has exited; each waitpid let go of the GIL, and the
        # tick thread then waited for the busy event loop to hand it back (2-8 ms, every tick).
        # Looking every SNAPSHOT_CHECK seconds delays the compaction's end by at most that.
        now = time.monotonic()
        if self._SyncObj__serializer._Serializer__pid > 0 and now < self._next_snapshot_check:
            return
        self._next_snapshot_check = now + SNAPSHOT_CHECK
        last = self._SyncObj__lastSerializedTime
        SyncObj._SyncObj__tryLogCompaction(self)
        if self._SyncObj__lastSerializedTime != last:  # a compaction ended (or had nothing new)
            self._draw_compaction_point()

    # ---- PreVote (Raft thesis §9.6; etcd's PreVote) ----
    # PySyncObj campaigns with term + 1 as soon as its election deadline passes, so a server
    # back from a partition, or a follower that missed heartbeats, deposed a leader that still
    # had its quorum (its higher term made the leader step down). Here a passing deadline first
    # starts a pre-vote round that changes no term: peers answer whether they *would* vote (no
    # if they heard from a leader within vote_guard, or lead, or the candidate's log is behind
    # theirs). PySyncObj's own campaign runs only after a majority said yes.

    def _pre_vote_gate(self, now: float) -> None:
        """`now` on PySyncObj's clock (raft_clock), as its election deadline is."""
        if (self._SyncObj__raftState == _LEADER or self.selfNode is None
                or self._SyncObj__raftElectionDeadline >= now
                or self._SyncObj__transferInProgress):  # a leadership transfer campaigns as is
            return
        if self._SyncObj__raftLeader is not None:
            # No word from the leader for an election timeout: stop naming it (as PySyncObj
            # does when it campaigns; KnownLeader=false), forwarded commands' outcome unknown.
            self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()
        if self.otherNodes and not any(self.isNodeConnected(n) for n in self.otherNodes):
            return  # PySyncObj campaigns only when connected; ask once a link is up
        term = self.raftCurrentTerm + 1
        if self._pre_vote_won == term:
            return  # SyncObj._onTick campaigns now
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._pre_vote_term, self._pre_votes = term, {str(self.selfNode)}
        _, index, last_term = self._SyncObj__raftLog[-1]
        for node in self.otherNodes:
            self._SyncObj__transport.send(node, {"type": "pre_vote", "term": term,
                                                 "last_log_index": index,
                                                 "last_log_term": last_term})
        self._count_pre_votes()  # a single server wins at once

    def _shorten_campaign(self) -> None:
        """A campaign that began this tick gets 0.15-0.45 s to win instead of PySyncObj's 1-2 s
        election timeout. When the leader dies, both followers campaign vote_guard + 50-250 ms
        after its last message; if their pre-votes cross, each wins its own, both campaign
        for the same term, each votes for itself, and nobody wins: the failover took a whole
        election timeout more (2.0-2.6 s instead of ~1 s, about one failover in ten). Safe: a
        retry still needs a pre-vote majority, which no server grants while it hears from a
        leader (vote stickiness), so a quick retry cannot depose one that won meanwhile."""
        if self._SyncObj__raftState != _CANDIDATE or self._campaign_term == self.raftCurrentTerm:
            return
        self._campaign_term = self.raftCurrentTerm
        self._SyncObj__raftElectionDeadline = raft_clock() + random.uniform(*CAMPAIGN_RETRY)

    def _count_pre_votes(self) -> None:
        if len(self._pre_votes) > (len(self.otherNodes) + 1) / 2:
            self._pre_vote_won = self._pre_vote_term
            self._SyncObj__raftElectionDeadline = 0.0  # campaign on this tick

    def _on_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        if message["type"] == "pre_vote_response":
            # Only for the round still open: an answer can arrive long after it was asked (a
            # peer cut off by a partition reads our request when the link heals). If this
            # server has meanwhile taken that term - it voted for the peer that won it - the
            # answer is stale, and counting it deposed a leader that had its quorum.
            if (message.get("granted") and message.get("term") == self._pre_vote_term
                    and self._pre_vote_term > self.raftCurrentTerm
                    and self._SyncObj__raftState != _LEADER):
                self._pre_votes.add(str(node))
                self._count_pre_votes()
            return
        _, index, last_term = self._SyncObj__raftLog[-1]
        heard = self._isLeader() or time.monotonic() - self.last_leader_contact < self.vote_guard
        granted = (message["term"] > self.raftCurrentTerm and not heard and not self._sitting_out
                   and (message["last_log_term"], message["last_log_index"]) >= (last_term, index))
        self._SyncObj__transport.send(node, {"type": "pre_vote_response",
                                             "term": message["term"], "granted": granted})

    def _keep_links_read(self) -> None:
        """PySyncObj drops a connection, and the message being sent, on the first send after
        `connectionTimeout` without reading anything on it. Followers never talk to each
        other, so the first RequestVote after a leader was lost went out on such a link and
        was dropped: every election needed a second timeout (new leader 2.8-3.9 s after a cut
        instead of ~1.2 s). A tiny message to every peer each second keeps every link read;
        the receiver ignores its type. A leader's append_entries already do this."""
        if self._SyncObj__raftState == _LEADER:
            return
        for node in self.otherNodes:
            self._SyncObj__transport.send(node, {"type": "keepalive"})

    def _abandon_stalled_connects(self) -> None:
        """PySyncObj waits on a connect until the kernel gives up: a peer whose SYNs are
        dropped (a firewall, a partition, a host that vanished) held the link in CONNECTING
        through the kernel's SYN retries - 1, 3, 7, 15, 31, 63 s - so after the cut healed
        it could stay unreachable for up to a minute more. A connect still pending after
        CONNECT_TIMEOUT is dropped here; PySyncObj dials again after connectionRetryTime
        with a fresh SYN (about every 2 s while the peer is unreachable)."""
        now = raft_clock()
        for conn in list(self._SyncObj__transport._connections.values()):
            if (conn.state == _CONNECTING
                    and now - conn._TcpConnection__lastReadTime > CONNECT_TIMEOUT):
                conn.disconnect()

    def heard_within(self, addr: str, seconds: float) -> bool:
        """A message came from `addr` within `seconds` (every link carries one at least each
        KEEPALIVE). Right after start, before anything could arrive, every peer counts."""
        return max(self.last_heard.get(addr, 0.0), self._started) > time.monotonic() - seconds

    def _sit_out(self) -> None:
        now = time.monotonic()
        if not self._sitting_out:
            self._sitting_out = True
            if self._SyncObj__raftState == _LEADER:
                self._SyncObj__setState(_FOLLOWER)
                self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()  # commands forwarded by Raft: outcome unknown
            if self.on_journal_failure is not None:
                self.on_journal_failure()
        if now >= self._next_recovery:
            self._next_recovery = now + 1.0
            if self._SyncObj__raftLog.try_recover():
                self._sitting_out = False
        # Not before a full election timeout from now: first hear whether there is a leader.
        self._SyncObj__raftElectionDeadline = raft_clock() + self._SyncObj__generateRaftTimeout()
    # ---- ReadIndex: one heartbeat round, sent now, for every read waiting for one ----

    def request_round(self) -> None:
        """Ask the tick thread to send append_entries to every follower at once (any thread).
        Reads arriving before the tick thread picks the request up share the round; the pipe
        PySyncObj uses to wake its poller for new commands wakes it for this too (with batching
        on there is none, and the round waits for the next tick, <= autoTickPeriod)."""
        if self.round_requested:
            return
        self.round_requested = True
        if self.wakeups is not None:
            self.wakeups.notify()

    def hold_wakeups(self) -> bool:
        """Queue commands without waking the tick thread until `release_wakeups` (same
        thread); False when there is nothing to hold (batching on)."""
        if self.wakeups is None:
            return False
        self.wakeups.held = True
        return True

    def release_wakeups(self) -> None:
        if self.wakeups is not None:
            self.wakeups.release()

    # ---- follower reads: read-index requests and answers over the PySyncObj link ----
    # A follower asks the leader for a read index ({"type": "read_index"}); the leader answers
    # ({"type": "read_index_response"}). Both travel on PySyncObj's encrypted connections, which
    # only the tick thread may use: the event loop queues messages with `send_read_message`
    # (any thread; wakes the tick thread through the command pipe) and they are sent at the
    # start of the next tick. Arriving ones go to `on_read_message` (tick thread). What they
    # mean is cluster/raft.py's business (RaftNode's "follower reads" section).

    def _init_follower_reads(self) -> None:
        self.read_outbox: deque[tuple[Any, dict[str, Any]]] = deque()
        self.on_read_message: Any = None  # called (node, message) in the tick thread

    def send_read_message(self, node: Any, message: dict[str, Any]) -> None:
        """Queue a read-index message for `node` (a PySyncObj Node) and wake the tick thread."""
        self.read_outbox.append((node, message))
        if self.wakeups is not None:
            self.wakeups.notify()

    def send_read_message_now(self, node: Any, message: dict[str, Any]) -> None:
        """Send at once (tick thread only: the leader answers requests where they arrive)."""
        self._SyncObj__transport.send(node, message)

    def _send_read_messages(self) -> None:  # tick thread
        outbox = self.read_outbox
        while outbox:
            node, message = outbox.popleft()
            if not self._SyncObj__transport.send(node, message) and \
                    message["type"] == "read_index" and self.on_read_message is not None:
                # Not connected: the request is lost, say so at once (the reads retry).
                self.on_read_message(node, {"type": "read_index_response", "id": message["id"],
                                            "lease": message["lease"], "index": None})

    def _on_read_message(self, node: Any, message: dict[str, Any]) -> None:  # tick thread
        if self.on_read_message is not None:
            self.on_read_message(node, message)

    def noop_index(self) -> int:
        """The log index of this leader's own-term no-op (0 before it has one)."""
        return int(self._SyncObj__noopIDx or 0)

    # ---- group commit ----
    # With batching off PySyncObj sends append_entries once per queued command. Commands
    # drained in one tick are sent (and, when durable, synced) together instead: same latency,
    # one fsync and one message per follower for the whole batch.

    def _checkCommandsToApply(self) -> None:
        if self._SyncObj__raftState != _LEADER and self._SyncObj__raftLeader is not None:
            self._forward_commands(self._SyncObj__raftLeader)
        self.draining = True
        transport = self._SyncObj__transport
        # Answers to followers' commands are held while the queue drains, and ride on the
        # append that carries those commands' entries to that follower (a follower must know
        # an entry is its command before it applies it: it reads them first); those no append
        # carried go out alone, still before any append of those entries.
        transport.held_responses = held = {}
        try:
            SyncObj._checkCommandsToApply(self)
            self.draining = False
            # Cleared before the send: a read stamped before this point is covered by it, and
            # a request made after it sets the flag again for the next tick.
            round_requested, self.round_requested = self.round_requested, False
            if self.send_deferred or (round_requested and self._isLeader()):
                self.send_deferred = False
                self.rounds_sent += round_requested
                self._send_appends()  # now, even if more commands arrived meanwhile
        finally:
            self.draining = False
            transport.held_responses = None
            self._send_responses(held)

    def _commands_waiting(self) -> bool:
        return bool(self._SyncObj__commandsQueue._FastQueue__queue)

    # ---- a follower's own commands: sent to the leader over the Raft link ----
    # As PySyncObj does (apply_command; the leader appends it and answers with its log index
    # and term; the callback fires when this server applies that entry, with its own FSM's
    # result), except that:
    # - the commands drained in one tick travel in one message (`apply_commands`), and the
    #   leader's answers to the commands it drained in one tick ride on the append that
    #   carries their entries to that follower (or, without one, go in one message per
    #   follower, `apply_command_responses`): each message costs a pickle, a seal and a send;
    #   a single command still goes as PySyncObj's own `apply_command`;
    # - a command that could not even be sent fails at once as "not applied" instead of
    #   waiting for a leader change or the caller's timeout.

    def _forward_commands(self, leader: Any) -> None:
        commands = self._SyncObj__commandsQueue
        waiting = self._SyncObj__commandsWaitingReply
        transport = self._SyncObj__transport
        batch: list[tuple[int | None, bytes]] = []
        deadline = raft_clock() + self._SyncObj__conf.appendEntriesPeriod
        while raft_clock() < deadline:
            try:
                command, callback = commands.get_nowait()
            except queue.Empty:
                break
            if isinstance(callback, tuple):  # another follower's, sent to us: not the leader
                transport.send(callback[0], {"type": "apply_command_response",
                                             "request_id": callback[1],
                                             "error": FAIL_REASON.NOT_LEADER})
                continue
            request_id = None
            if callback is not None:
                self._SyncObj__commandsLocalCounter += 1
                request_id = self._SyncObj__commandsLocalCounter
                waiting[request_id] = callback
            batch.append((request_id, command))
        if not batch:
            return
        if len(batch) == 1:
            request_id, command = batch[0]
            message: dict[str, Any] = {"type": "apply_command", "command": command}
            if request_id is not None:
                message["request_id"] = request_id
        else:
            message = {"type": "apply_commands", "commands": batch}
        was_connected = self.isNodeConnected(leader)
        self.command_messages_sent += 1
        if transport.send(leader, message):
            return
        # Never sent (no connection): certainly not applied. Lost while sending: unknown.
        why = FAIL_REASON.UNKNOWN_OUTCOME if was_connected else FAIL_REASON.MISSING_LEADER
        for request_id, _ in batch:
            failed = waiting.pop(request_id, None) if request_id is not None else None
            if failed is not None:
                failed(None, why)

    def _on_apply_commands(self, node: Any, message: dict[str, Any]) -> None:
        """A follower's batch: queued as PySyncObj queues one `apply_command` (drained by the
        next tick of this thread, which is the one running now: no wake-up needed)."""
        commands = self._SyncObj__commandsQueue
        transport = self._SyncObj__transport
        for request_id, command in message.get("commands") or ():
            try:
                commands.put_nowait((command, (node, request_id) if request_id is not None
                                     else None))
            except queue.Full:
                if request_id is not None:
                    transport.send(node, {"type": "apply_command_response",
                                          "request_id": request_id,
                                          "error": FAIL_REASON.QUEUE_FULL})

    def _send_responses(self, held: dict[Any, list[dict[str, Any]]]) -> None:
        transport = self._SyncObj__transport
        for node, responses in held.items():
            if not responses:
                self.answers_carried += 1  # on an append
                continue
            self.response_messages_sent += 1
            if len(responses) == 1:
                transport.send(node, responses[0])
            else:
                transport.send(node, {"type": "apply_command_responses",
                                      "responses": responses})

    # ---- durability="fsync": nothing counts toward a quorum before it is on disk ----
    # A follower syncs its journal before acknowledging entries. The leader syncs right after
    # it sends entries, in the same tick-thread call: its own fsync overlaps the followers'
    # (one fsync less on the commit path), and since acks are only processed - and the commit
    # index only advanced - by later ticks, no entry commits before the leader's copy is on
    # disk. Entries arriving together share one sync.

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,
                                  nextNodeIdx: Any = None, success: bool = False) -> None:
        if reset and not success and nextNodeIdx is not None:
            # The entry before the leader's append has another term here. PySyncObj answers
            # "go back one", so a healed old leader holding N entries of its deposed term took
            # N round trips (N heartbeats once writes stop) before it could apply anything
            # again - the leader's next index for it had run ahead while their link was
            # still thought up, and a reconnect does not reset it. Entries up to this server's
            # commit index are committed, so the leader's log holds them too (Leader
            # Completeness): it can resume right after them, in one round trip.
            self.backtracks += 1
            nextNodeIdx = min(nextNodeIdx, self.raftCommitIndex + 1)
        if self.durable and success:
            # Held until the poll that read this append ends: the appends read together share
            # one fsync, then their acks go out in order (one each: the lease pairs every
            # append with its ack). An ack to another leader or term goes after those first.
            if self._held_from != (node, self.raftCurrentTerm):
                self._flush_acks()
                self._held_from = (node, self.raftCurrentTerm)
            self._held_acks.append((node, nextNodeIdx))
            return
        self._flush_acks()  # in order after the held ones
        SyncObj._SyncObj__sendNextNodeIdx(self, node, reset, nextNodeIdx, success)

    def _flush_acks(self) -> None:
        """Sync the journal, then send the held acks (raises JournalError: none is sent)."""
        if not self._held_acks:
            return
        self._SyncObj__raftLog.sync()
        self.ack_syncs += 1
        held, self._held_acks, self._held_from = self._held_acks, [], None
        for node, next_index in held:
            SyncObj._SyncObj__sendNextNodeIdx(self, node, False, next_index, True)
        self.acks_sent += len(held)

    def _extends_held(self, node: Any, kind: Any, message: dict[str, Any]) -> bool:
        """An append from the leader and term the held acks answer, that only adds entries:
        PySyncObj truncates everything after its prevLogIdx, and an ack held from before a
        truncation could claim entries no longer here."""
        return (kind == "append_entries" and self._held_from == (node, message.get("term"))
                and message.get("prevLogIdx", -1) >= self._SyncObj__raftLog[-1][1])

    def _SyncObj__sendAppendEntries(self) -> None:
        if self.draining or self._commands_waiting():
            # Commands wait in the queue: this tick drains them next (_onTick calls
            # _checkCommandsToApply right after its own send), and one append per follower
            # then carries the new commit index and the new entries - not a commit-only
            # append and its ack first, then another pair for the entries.
            self.send_deferred = True
            return
        self._send_appends()

    def _send_appends(self) -> None:
        SyncObj._SyncObj__sendAppendEntries(self)
        if self.durable:
            # raises JournalError: the tick ends before any ack is read, and the next one
            # starts by stepping down (see _onTick), so nothing commits on this copy
            self._SyncObj__raftLog.sync()

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.last_heard[str(node)] = time.monotonic()
        if self._held_acks and not self._extends_held(node, kind, message):
            self._flush_acks()  # every other message is handled as if the acks had gone out
        if self._sitting_out and kind in ("append_entries", "request_vote", "timeout_now"):
            return
        if kind in ("pre_vote", "pre_vote_response"):
            return self._on_pre_vote(node, message)  # ours: PySyncObj never sees them
        if kind == "apply_commands":  # ours, as are the responses: one message per batch
            return self._on_apply_commands(node, message)
        if kind == "apply_command_responses":
            for response in message.get("responses") or ():
                SyncObj._SyncObj__onMessageReceived(self, node, response)
            return
        if kind == "append_entries" and "answers" in message:
            # The leader's answers to our commands, before the entries that may carry them.
            for response in message["answers"]:
                SyncObj._SyncObj__onMessageReceived(self, node, response)
        if kind in READ_MESSAGES:
            return self._on_read_message(node, message)  # ours too
        if kind == "next_node_idx":
            self.lease.on_response(node)
            if self.on_ack is not None:
                self.on_ack()
        elif kind == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            self.last_leader_contact = time.monotonic()
            self.entries_received += len(message.get("entries") or ())
        elif kind == "request_vote" and (
            self._isLeader() or time.monotonic() - self.last_leader_contact < self.vote_guard
        ):
            # Take the term (and step down if leading) but make the vote impossible to grant:
            # PySyncObj refuses candidates whose last log term is older than ours.
            message = dict(message, last_log_term=-1)
        if kind == "next_node_idx" and message.get("success") and not message.get("reset"):
            # Pipelining: PySyncObj moves nextIndex to the end of the log when it sends, but an
            # ack of an *earlier* append sets it back to just past that append, so the next
            # send repeats every entry still in flight (pickled, compressed, encrypted and
            # written again; the follower truncates and re-appends them). Here an ack only moves
            # nextIndex forward. Safe: each append still carries prevLogIdx/term, and a follower
            # that lacks entries (a lost connection) answers with a reset, which still sets
            # nextIndex back.
            next_index = self._SyncObj__raftNextIndex
            sent = next_index.get(node)
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            if sent is not None and next_index.get(node, sent) < sent:
                next_index[node] = sent
            return
        if kind == "next_node_idx" and message.get("reset") and not message.get("success"):
            # A refused append moves nextIndex back, never forward (etcd likewise ignores a
            # stale rejection). Every send moves nextIndex to the end of what it sent, so a
            # refusal pointing past the current nextIndex answers an append sent before an
            # earlier refusal moved it back. PySyncObj took it anyway. A healed old leader with
            # uncommitted entries refuses the first append of a resend (term mismatch: resume
            # after my commit index) and, when the resend spans several appends (64 KB each),
            # the next one too (my log is shorter: resume after my last entry). Taking the
            # second answer skipped the entries the first had just refused, so the same resend
            # went out every round, for ever: the old leader never applied anything again and
            # its default and ?consistent reads answered 503 (tests/test_partition.py).
            next_index = self._SyncObj__raftNextIndex
            before = next_index.get(node)
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            if before is not None and next_index.get(node, before) > before:
                next_index[node] = before
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    # ---- membership: tell the node whenever the set of servers changed ----
    # PySyncObj applies a change when its entry is appended (and reverts it if the entry is
    # truncated), loads the snapshot's view with a snapshot, and replays changes on restart.

    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        changed = SyncObj._SyncObj__doChangeCluster(self, request, reverse)
        if changed and self.on_membership is not None:
            self.on_membership(self.servers())
        return bool(changed)

    def _SyncObj__updateClusterConfiguration(self, newNodes: Any) -> None:
        SyncObj._SyncObj__updateClusterConfiguration(self, newNodes)
        if self.on_membership is not None:
            self.on_membership(self.servers())

    def _SyncObj__onNodeConnected(self, node: Any) -> None:
        self.lease.reset(node)
        SyncObj._SyncObj__onNodeConnected(self, node)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        self.lease.reset(node)
        SyncObj._SyncObj__onNodeDisconnected(self, node)
        # The leader's connection closed (a crashed or killed server's sockets close at once):
        # campaign as soon as vote stickiness allows - vote_guard after the last contact, when
        # the other followers will grant votes too - instead of after a random 1-2 s election
        # timeout. The random 50-250 ms on top keeps two followers from splitting the vote. A
        # leader that is alive resets the deadline with its next append_entries, and one that
        # still talks to a majority keeps their votes by the same stickiness.
        # PySyncObj's deadlines are on its own clock (CLOCK_MONOTONIC_RAW, a fraction of a
        # second off time.monotonic here), so the delay is carried over, not the time.
        if (self._SyncObj__raftState != _LEADER
                and node == self._SyncObj__raftLeader and self.last_leader_contact > 0):
            delay = (self.last_leader_contact + self.vote_guard + random.uniform(0.05, 0.25)
                     - time.monotonic())
            soon = raft_clock() + delay
            if soon < self._SyncObj__raftElectionDeadline:
                self._SyncObj__raftElectionDeadline = soon

    def election_due(self) -> float:
        """When (time.monotonic) this server campaigns if it hears no leader until then."""
        return float(self._SyncObj__raftElectionDeadline) - raft_clock() + time.monotonic()
