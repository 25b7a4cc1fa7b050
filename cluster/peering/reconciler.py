"""Peering streams on the leader: accept them, dial them, and drive peerings to ACTIVE.

`PeeringService` lives on every server. While the server leads (`run_leader`, a
`LeaderRoutines` routine), it:

- dials every dialer peering that holds an active stream secret and has no stream, rotating
  through ManualServerAddresses (else PeerServerAddresses), verifying the acceptor against the
  token's CA and ServerName, with `tenacity` backoff (20 ms between the addresses of one round,
  then 0.5 s * 2^n capped at min(64 s, a quarter of the heartbeat timeout, so a new leader can
  re-verify in time); 8 ms when a follower answers, as Consul, doubling to 0.5 s);
- accepts streams from dialers (the listener in `cluster.peering.peerstream` calls `accept`);
- writes every state change through Raft as a peering event (the FSM's transition table
  decides the state): ACTIVE when a stream is up (both
  sides), FAILING on a stream error or when a peering expected to be connected has had no
  stream for the heartbeat timeout (a new leader re-verifies every ACTIVE peering this way),
  TERMINATED when the other side sends Terminated;
- sends Terminated before a deleted peering is removed (`terminate`).

Stream timings live in memory in `streams` (the API's `ctx.streams`, rendered as
`StreamStatus`), with `LastError` holding the reason of the last failure. Everything is reset
when leadership is lost: a new leader rebuilds it from Raft.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from .. import metrics
from ..commands import ExchangeSecret, PeeringEvent
from ..fsm import (
    ACTIVE,
    DELETING,
    ESTABLISHING,
    FSM,
    TERMINATED,
    Record,
    should_dial,
)
from ..proposer import NotApplied, Proposer, UnknownOutcome
from ..raft import RaftNode
from ..state.base import Touched
from ..state.transitions import (
    ADDRESSES_RECEIVED,
    HEARTBEAT_TIMEOUT,
    STREAM_FAILED,
    STREAM_OPEN,
    TERMINATED_BY_PEER,
    TRANSITIONS,
)
from .peerstream import (
    ABORTED,
    ERROR,
    ESTABLISHMENT_DENIED,
    FAILED_PRECONDITION,
    HEARTBEAT,
    INVALID_ARGUMENT,
    OPEN,
    OPEN_TIMEOUT,
    PERMISSION_DENIED,
    TERMINATED_FRAME,
    UNAVAILABLE,
    LiveStream,
    Moved,
    PeerTerminated,
    Rejected,
    StreamError,
    dial_stream,
    exchange_secret,
    pack,
    secrets_equal,
    unpack,
)
from .replication import Replication
from .tls import LeafCerts

log = logging.getLogger("peerplane.reconciler")

DEFAULT_HEARTBEAT = 15.0  # Consul's defaultOutgoingHeartbeatInterval
DEFAULT_HEARTBEAT_TIMEOUT = 120.0  # Consul's defaultIncomingHeartbeatTimeout
NOT_LEADER = "node is not a leader anymore; cannot continue streaming"


class _Retry(Exception):
    def __init__(self, redirect: bool = False) -> None:
        super().__init__()
        self.redirect = redirect


class _Ring:
    """Addresses to dial, rotating; a leader named by a follower goes first."""

    def __init__(self) -> None:
        self.i = 0
        self.leader = ""

    def next(self, rec: Record) -> str:
        if self.leader:
            addr, self.leader = self.leader, ""
            return addr
        addrs = rec.get("ManualServerAddresses") or rec.get("PeerServerAddresses") or []
        addr = addrs[self.i % len(addrs)]
        self.i += 1
        return addr


class PeeringService:
    def __init__(
        self,
        *,
        node: RaftNode,
        proposer: Proposer,
        fsm: FSM,
        datacenter: str,
        streams: dict[str, dict[str, Any]],
        leaf: LeafCerts,
        heartbeat: float = DEFAULT_HEARTBEAT,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
    ) -> None:
        self.node = node
        self.proposer = proposer
        self.fsm = fsm
        self.datacenter = datacenter
        self.streams = streams
        self.leaf = leaf
        self.heartbeat = heartbeat
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff_cap = min(64.0, max(0.5, heartbeat_timeout / 4))
        self.live: dict[str, LiveStream] = {}
        self._dialers: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_ok: dict[str, float] = {}  # last time a peering's stream was known good
        self._dialed: dict[str, str] = {}  # the stream secret each peering was last dialed with
        # Acceptor addresses this leader reached (a stream, or a follower's leader hint): kept
        # when the acceptor pushes its server addresses (see set_server_addresses).
        self._reached: dict[str, set[str]] = {}
        self._leading_since = 0.0
        self._leading = False  # run_leader is active (dial loops stop dialing when it ends)
        self._kick = asyncio.Event()
        # What to look at on the next pass: peerings the FSM touched or whose stream or dial
        # task ended, every peering after a restore or a new leadership (`_full`), and
        # re-verification deadlines (time, peering ID).
        self._dirty: set[str] = set()
        self._full = True
        self._deadlines: list[tuple[float, str]] = []
        self.visits = 0  # peerings looked at, all passes together (tests count work with it)
        self._session: aiohttp.ClientSession | None = None
        self.replication: Replication | None = None  # set by the agent

    # ---- plumbing ----

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=2.0, sock_connect=2.0)
            )
        return self._session

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def is_leader(self) -> bool:
        """Leader with its own term's entries applied (a brand-new leader may not yet know a
        peering that is committed; it answers 'not leader, try me again')."""
        return self.node.lease_holds()

    def leader_peering_addr(self) -> str:
        leader = self.node.leader()
        if leader is None or (leader == self.node.self_addr and not self.node.is_leader()):
            return ""
        return self.fsm.servers_view().get(leader, {}).get("PeeringAddr", "")

    def _entry(self, peering_id: str) -> dict[str, Any]:
        entry = self.streams.get(peering_id)
        if entry is None:
            entry = {"ImportedServices": [], "ExportedServices": [], "LastHeartbeat": None,
                     "LastReceive": None, "LastSend": None}
            self.streams[peering_id] = entry
        return entry

    def note_error(self, peering_id: str, reason: str) -> None:
        """Keep the reason of the last failure where reads show it (StreamStatus.LastError)."""
        entry = self.streams.get(peering_id)
        if entry is None:
            entry = {"ImportedServices": None, "ExportedServices": None, "LastHeartbeat": None,
                     "LastReceive": None, "LastSend": None}
            self.streams[peering_id] = entry
        entry["LastError"] = reason

    async def _write(
        self, peering_id: str, event: str, *, want: Callable[[Record], bool] | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        """A peering event through Raft, one at a time per peering, deciding on the freshest
        record (`want` runs under the lock, after every earlier write of this peering applied);
        the FSM's transition table decides the next state."""
        lock = self._locks.setdefault(peering_id, asyncio.Lock())
        async with lock:
            rec = self.fsm.by_id(peering_id)
            if rec is None:
                return None
            if want is not None and not want(rec):
                return {"skipped": True}
            return await self.proposer.attempt(PeeringEvent(ID=peering_id, Event=event, **extra))

    async def _fail(self, peering_id: str, reason: str, cond: Callable[[], bool],
                    event: str = STREAM_FAILED) -> None:
        log.info("peering %s failing: %s", peering_id, reason)
        self.note_error(peering_id, reason)
        await self._write(
            peering_id, event,
            want=lambda rec: cond() and (rec["State"], event) in TRANSITIONS
            and TRANSITIONS[rec["State"], event] != rec["State"],
        )

    async def _terminated(self, peering_id: str) -> None:
        log.info("peering %s terminated by the peer", peering_id)
        await self._write(peering_id, TERMINATED_BY_PEER)
        self.streams.pop(peering_id, None)

    # ---- establish (dialer, called by the HTTP handler on the leader) ----

    async def exchange(self, addresses: list[str], server_name: str, ca_pems: list[str],
                       peer_id: str, establishment_secret: str) -> str:
        return await exchange_secret(
            self.session, addresses, server_name, ca_pems, peer_id, establishment_secret
        )

    # ---- acceptor: secret exchange ----

    async def accept_exchange(self, peer_id: str, secret: str) -> tuple[int, str]:
        rec = self.fsm.by_id(peer_id)
        stored = self.fsm.secrets_for(peer_id).get("establishment", "")
        if rec is None or should_dial(rec) or not stored or not secrets_equal(stored, secret):
            return 403, ESTABLISHMENT_DENIED
        pending = str(uuid.uuid4())  # chosen before submission; the FSM stays pure
        cmd = ExchangeSecret(ID=peer_id, EstablishmentSecret=secret, PendingStreamSecret=pending)
        try:
            res = await self.proposer.submit(cmd)
        except (NotApplied, UnknownOutcome) as e:
            return 503, f"secret exchange not committed: {e}"
        if "error" in res:
            return (403, ESTABLISHMENT_DENIED) if res.get("kind") == "permission" else (
                503, res["error"])
        return 200, pending

    # ---- acceptor: streams ----

    async def accept(self, ws: Any) -> None:
        async def refuse(code: str, message: str, leader: str = "") -> None:
            frame = {"Type": ERROR, "Code": code, "Message": message}
            if leader:
                frame["LeaderAddress"] = leader
            with contextlib.suppress(Exception):
                await ws.send_bytes(pack(frame))

        if not self.is_leader():
            await refuse(FAILED_PRECONDITION, "cannot establish a peering stream on a follower "
                         "node", self.leader_peering_addr())
            return
        try:
            msg = await ws.receive(timeout=OPEN_TIMEOUT)
            frame = unpack(msg.data) if msg.type == aiohttp.WSMsgType.BINARY else {}
        except Exception:  # noqa: BLE001 - silence or garbage
            frame = {}
        if frame.get("Type") != OPEN:
            await refuse(INVALID_ARGUMENT, "first message when initiating a peering must be: Open")
            return
        peer_id = str(frame.get("PeerID") or "")
        given = str(frame.get("StreamSecretID") or "")
        if not peer_id:
            await refuse(INVALID_ARGUMENT, "initial subscription request must specify a PeerID")
            return
        rec = self.fsm.by_id(peer_id)
        if rec is None:
            await refuse(INVALID_ARGUMENT, f"initial subscription for unknown PeerID: {peer_id}")
            return
        if rec["State"] in (DELETING, TERMINATED):
            if rec["State"] == DELETING:
                with contextlib.suppress(Exception):
                    await ws.send_bytes(pack({"Type": TERMINATED_FRAME}))
            await refuse(ABORTED, f"peering is marked as deleted: {peer_id}")
            return
        if should_dial(rec) or rec.get("PeerID"):
            await refuse(INVALID_ARGUMENT,
                         "expected PeerID to be empty; the wrong end of peering is being dialed")
            return
        secrets = self.fsm.secrets_for(peer_id)
        promote = ""
        if secrets.get("active") and secrets_equal(secrets["active"], given):
            pass
        elif secrets.get("pending") and secrets_equal(secrets["pending"], given):
            promote = given
        else:
            await refuse(PERMISSION_DENIED, "invalid peering stream secret" if secrets else
                         "unable to authorize connection, peering must be re-established")
            return
        remote_in = frame.get("Remote")
        if not isinstance(remote_in, dict):
            remote_in = {}
        remote = {"Partition": str(remote_in.get("Partition") or ""),
                  "Datacenter": str(remote_in.get("Datacenter") or "")}

        old = self.live.get(peer_id)
        if old is not None:  # the newest authenticated stream wins (e.g. after a failover)
            await old.stop(UNAVAILABLE, "superseded by a newer stream for this peering")
        entry = self._entry(peer_id)
        entry.pop("LastError", None)
        live = LiveStream(
            peering_id=peer_id, role="acceptor", secret=given, ws=ws, status=entry,
            interval=self.heartbeat, timeout=self.heartbeat_timeout,
            still_leader=self.node.is_leader,
        )
        live.mark_receive(False)
        self.live[peer_id] = live
        try:
            res = await self._write(
                peer_id, STREAM_OPEN, expect_secret=given,
                PromoteStreamSecret=promote or None, Remote=remote,
                want=lambda r: bool(promote) or r["State"] != ACTIVE
                or (r.get("Remote") or {}) != remote,
            )
            if res is None:
                await live.stop(UNAVAILABLE, "could not record the stream; retry")
                return
            if "error" in res:
                code = PERMISSION_DENIED if res.get("kind") == "permission" else ABORTED
                await live.stop(code, res["error"])
                return
            await live.send({"Type": HEARTBEAT})  # the Open is accepted
            log.info("peering %s: accepted a stream from %s", peer_id, remote["Datacenter"])
            with contextlib.suppress(Moved):  # the dialer's leader moved; it will be back
                await self._run(live)
        finally:
            if self.live.get(peer_id) is live:
                del self.live[peer_id]
                self._stream_ended(peer_id)

    async def _run(self, live: LiveStream) -> str:
        """Pump a stream and record how it ended; returns 'done' when the peering is over for
        this side, 'again' when it should be re-formed."""
        pid = live.peering_id
        # replicated resources flow both ways while the stream is up (cluster/peering/)
        session = await self.replication.attach(live) if self.replication else None
        try:
            why = await live.pump()
            return "done" if why == "terminate" else "again"
        except PeerTerminated:
            await self._terminated(pid)
            return "done"
        except Moved as e:
            log.info("peering %s: the other side moved: %s", pid, e)
            raise
        except StreamError as e:
            if self.live.get(pid) is live:
                del self.live[pid]
                self._stream_ended(pid)
            await self._fail(pid, str(e), cond=lambda: pid not in self.live)
            return "again"
        finally:
            if self.replication is not None:
                await self.replication.detach(session)

    # ---- dialer ----

    async def _dial_loop(self, peering_id: str, secret: str) -> None:
        ring = _Ring()
        counts = {"redirects": 0, "failures": 0}
        self._last_ok.setdefault(peering_id, self._now())

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            metrics.reconciler_retry(
                "redirect" if isinstance(exc, _Retry) and exc.redirect else "dial")
            log.debug("peering %s: dial attempt %d failed: %r", peering_id, rs.attempt_number,
                      exc.__cause__ or exc.__context__ if exc else None)
            if isinstance(exc, _Retry) and exc.redirect:
                # A follower answered: Consul's 8 ms fast path, doubling after 5 tries (an
                # election is under way), capped at 0.5 s so a new leader is found promptly.
                counts["redirects"] += 1
                return min(0.008 * 2 ** max(0, counts["redirects"] - 5), 0.5)
            counts["redirects"] = 0
            counts["failures"] += 1
            rec = self.fsm.by_id(peering_id) or {}
            n = len(rec.get("ManualServerAddresses") or rec.get("PeerServerAddresses") or [1])
            if counts["failures"] % n:
                return 0.02  # try the other addresses of this round first
            rounds = counts["failures"] // n
            return min(self.backoff_cap, 0.5 * 2 ** (rounds - 1)) * random.uniform(0.8, 1.2)

        while True:
            outcome = "done"
            counts.update(redirects=0, failures=0)  # a stream was up: start backing off afresh
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Retry), wait=wait, stop=stop_never, reraise=True,
            ):
                with attempt:
                    outcome = await self._dial_once(peering_id, secret, ring)
            if outcome == "done":
                return
            await asyncio.sleep(0.05)

    def _qualifies(self, rec: Record | None, secret: str) -> bool:
        return (
            self._leading and rec is not None and should_dial(rec) and bool(rec.get("PeerID"))
            and rec["State"] not in (DELETING, TERMINATED)
            and self.fsm.secrets_for(rec["ID"]).get("active") == secret
        )

    async def _dial_once(self, pid: str, secret: str, ring: _Ring) -> str:
        rec = self.fsm.by_id(pid)
        if not self._qualifies(rec, secret):
            return "done"
        assert rec is not None
        addr = ring.next(rec)
        open_frame = {
            "Type": OPEN, "PeerID": rec["PeerID"], "StreamSecretID": secret,
            "Remote": {"Partition": rec.get("Partition", ""), "Datacenter": self.datacenter},
        }
        try:
            ws = await dial_stream(
                self.session, addr, rec.get("PeerServerName", ""), rec.get("PeerCAPems") or [],
                open_frame, timeout=min(OPEN_TIMEOUT, self.heartbeat_timeout),
            )
        except Moved as e:
            ring.leader = e.leader
            self._reached.setdefault(pid, set()).add(addr)
            raise _Retry(redirect=True) from None
        except PeerTerminated:
            await self._terminated(pid)
            return "done"
        except Rejected as e:
            if e.code == INVALID_ARGUMENT and "unknown PeerID" in str(e):
                # The acceptor (verified by TLS) has no such peering any more: it was deleted
                # while we could not hear its Terminated. Consul retries forever; we stop.
                self.note_error(pid, f"{addr}: {e}")
                await self._terminated(pid)
                return "done"
            await self._fail(pid, f"{addr}: {e}", cond=lambda: pid not in self.live)
            raise _Retry() from None
        except StreamError as e:
            self.note_error(pid, str(e))
            if e.definitive:
                await self._fail(pid, str(e), cond=lambda: pid not in self.live)
            raise _Retry() from None

        entry = self._entry(pid)
        entry["ImportedServices"] = entry["ImportedServices"] or []
        entry["ExportedServices"] = entry["ExportedServices"] or []
        live = LiveStream(
            peering_id=pid, role="dialer", secret=secret, ws=ws, status=entry,
            interval=self.heartbeat, timeout=self.heartbeat_timeout,
            still_leader=self.node.is_leader,
        )
        live.mark_receive(True)  # the acceptor's first Heartbeat accepted the Open
        live.status["LastSend"] = live.status["LastReceive"]
        old = self.live.get(pid)
        if old is not None:
            await old.stop(UNAVAILABLE, "superseded by a newer stream for this peering")
        self.live[pid] = live
        try:
            res = await self._write(
                pid, STREAM_OPEN, expect_secret=secret,
                want=lambda r: r["State"] != ACTIVE,
            )
            if res is not None and "error" in res:
                if "marked for deletion" in res["error"]:
                    await live.terminate()
                    return "done"
                await live.stop(UNAVAILABLE, res["error"])
                return "again"
            entry.pop("LastError", None)
            self._reached.setdefault(pid, set()).add(addr)
            log.info("peering %s: stream to %s is up", pid, addr)
            try:
                return await self._run(live)
            except Moved as e:
                ring.leader = e.leader
                return "again"
        finally:
            if self.live.get(pid) is live:
                del self.live[pid]
                self._stream_ended(pid)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)

    async def set_server_addresses(self, pid: str, addrs: list[str]) -> None:
        """The acceptor's servers, pushed over the stream (PeeringServerAddresses): the dialer
        keeps them as PeerServerAddresses, so it follows address rotation. An address this
        leader has reached the acceptor through stays even when the push leaves it out: an
        acceptor that advertises addresses we cannot reach (internal ones behind NAT, a wrong
        advertise_addr_wan) must not cut us off (hashicorp/consul #15763). Consul overwrites."""
        rec = self.fsm.by_id(pid)
        manual = set((rec or {}).get("ManualServerAddresses") or [])
        kept = self._reached.get(pid, set()) - set(addrs) - manual
        if addrs and kept:
            log.info("peering %s: keeping %s (reached) beside the pushed %s", pid,
                     sorted(kept), addrs)
            addrs = sorted({*addrs, *kept})
        if addrs:
            await self._write(
                pid, ADDRESSES_RECEIVED, PeerServerAddresses=addrs,
                want=lambda r: sorted(r.get("PeerServerAddresses") or []) != addrs,
            )

    # ---- termination ----

    async def terminate(self, peering_id: str) -> None:
        """Send Terminated over this peering's stream (if one is up) and stop dialing it."""
        live = self.live.get(peering_id)
        if live is not None:
            log.info("peering %s: sending Terminated", peering_id)
            await live.terminate()
        dialer = self._dialers.pop(peering_id, None)
        if dialer is not None:
            dialer[1].cancel()
        self.streams.pop(peering_id, None)

    # ---- the leader routine ----

    # ---- the leader routine: driven by what changed, plus its own deadlines ----

    def on_change(self, touched: Touched | None) -> None:
        """The FSM applied something (event loop): look again at the peerings it touched
        (`None`: a snapshot was restored, look at every one)."""
        if touched is None:
            self._full = True
        else:
            self._dirty.update(key for table, key in touched if table == "peerings")
        self._kick.set()

    def _look_again(self, pid: str) -> None:
        self._dirty.add(pid)
        self._kick.set()

    def _stream_ended(self, pid: str) -> None:
        """A stream of `pid` is gone: the re-verification clock starts now."""
        self._last_ok[pid] = self._now()
        self._look_again(pid)

    async def run_leader(self) -> None:
        self._leading_since = self._now()
        self._leading = True
        self._full = True  # a new leader looks at every peering once
        log.info("peering reconciler started")
        try:
            while True:
                self._kick.clear()
                await self._reconcile()
                wait = self._deadlines[0][0] - self._now() if self._deadlines else 1.0
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._kick.wait(), min(wait, 1.0))
                await asyncio.sleep(0.005)  # let a burst of applies land before the next pass
        finally:
            await self._stand_down()

    async def _reconcile(self) -> None:
        now = self._now()
        if self._full:
            self._full = False
            pids = set(self.fsm.peering_ids()) | set(self._dialers) | set(self.streams)
            self._dirty.clear()
        else:
            pids, self._dirty = self._dirty, set()
        while self._deadlines and self._deadlines[0][0] <= now:
            pids.add(heapq.heappop(self._deadlines)[1])
        for pid in pids:
            await self._reconcile_one(pid, now)

    async def _reconcile_one(self, pid: str, now: float) -> None:
        self.visits += 1
        rec = self.fsm.by_id(pid)
        if rec is None:  # removed: forget it
            dialer = self._dialers.pop(pid, None)
            if dialer is not None:
                dialer[1].cancel()
            for table in (self.streams, self._last_ok, self._locks, self._dialed, self._reached):
                table.pop(pid, None)
            return
        if rec["State"] == DELETING:
            if pid in self.live or pid in self._dialers:
                await self.terminate(pid)
            return
        if should_dial(rec):
            await self._keep_dialing(rec, now)
        # Re-verification: a peering expected to be connected has no stream for too long.
        expect = rec["State"] == ACTIVE or (should_dial(rec) and rec["State"] == ESTABLISHING)
        if expect and pid not in self.live:
            since = max(self._leading_since, self._last_ok.get(pid, 0.0))
            if now - since > self.heartbeat_timeout:
                last = (self.streams.get(pid) or {}).get("LastError")
                reason = (f"no peering stream for {self.heartbeat_timeout:g}s"
                          + (f": {last}" if last else ""))
                self._last_ok[pid] = now  # don't rewrite it every pass
                await self._fail(pid, reason, cond=lambda p=pid: p not in self.live,
                                 event=HEARTBEAT_TIMEOUT)
            else:
                heapq.heappush(self._deadlines, (since + self.heartbeat_timeout + 0.001, pid))

    async def _keep_dialing(self, rec: Record, now: float) -> None:
        """One dial task per dialing peering that qualifies, with its current secret."""
        pid = rec["ID"]
        secret = self.fsm.secrets_for(pid).get("active", "")
        wanted = bool(secret) and self._qualifies(rec, secret)
        current = self._dialers.get(pid)
        if current is not None and (not wanted or current[0] != secret or current[1].done()):
            self._dialers.pop(pid)
            live = self.live.get(pid)
            if live is not None and (not wanted or live.secret != secret):
                # say why before the dial task goes, or the peer sees an abrupt end
                await live.stop(UNAVAILABLE, "the peering was re-established")
            current[1].cancel()
            current = None
        if wanted and current is None:
            if self._dialed.get(pid) != secret:  # a new establishment: a full timeout
                self._dialed[pid] = secret
                self._last_ok[pid] = now
            self._entry(pid)
            task = asyncio.create_task(self._dial_loop(pid, secret), name=f"dial-{pid}")
            task.add_done_callback(lambda _t, p=pid: self._look_again(p))
            self._dialers[pid] = (secret, task)

    async def _stand_down(self) -> None:
        """Leadership lost (or shutdown): close every stream, forget every status."""
        self._leading = False  # no dial loop starts another attempt from here on
        leader = self.leader_peering_addr() if not self.node.is_leader() else ""
        lives = list(self.live.values())
        await asyncio.gather(
            *(lv.stop(FAILED_PRECONDITION, NOT_LEADER, leader) for lv in lives),
            return_exceptions=True,
        )
        dialers = [t for _, t in self._dialers.values()]
        self._dialers.clear()
        for t in dialers:
            t.cancel()
        for t in dialers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.live.clear()
        self.streams.clear()
        self._last_ok.clear()
        self._dialed.clear()
        self._reached.clear()
        self._dirty.clear()
        self._deadlines.clear()
        log.info("peering reconciler stopped")

    async def close(self) -> None:
        """Server shutdown: tell peers (they retry elsewhere) and release the client session."""
        await asyncio.gather(
            *(lv.stop(UNAVAILABLE, "server shutting down") for lv in list(self.live.values())),
            return_exceptions=True,
        )
        if self._session is not None:
            await self._session.close()
