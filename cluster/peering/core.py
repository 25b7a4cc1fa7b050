"""What the peering acceptor, dialer and leader loop share: the live streams and their status,
the per-peering writes of peering events through Raft, and termination.

See cluster/peering/reconciler.py for what the leader does with peerings; acceptor.py and
dialer.py for the two ends of a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

from ..commands import PeeringEvent
from ..fsm import FSM, Record
from ..metrics import NO_EVENTS, Events
from ..proposer import Proposer
from ..raft import RaftNode
from ..state.transitions import STREAM_FAILED, TERMINATED_BY_PEER, TRANSITIONS
from .peerstream import UNAVAILABLE, LiveStream, Moved, PeerTerminated, StreamError
from .replication import Replication
from .status import empty_status
from .tls import LeafCerts

log = logging.getLogger("peerplane.reconciler")

DEFAULT_HEARTBEAT = 15.0  # Consul's defaultOutgoingHeartbeatInterval
DEFAULT_HEARTBEAT_TIMEOUT = 120.0  # Consul's defaultIncomingHeartbeatTimeout


class PeeringCore:
    def __init__(
        self,
        *,
        node: RaftNode,
        proposer: Proposer,
        fsm: FSM,
        datacenter: str,
        leaf: LeafCerts,
        heartbeat: float = DEFAULT_HEARTBEAT,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        replication: Replication | None = None,
        events: Events = NO_EVENTS,
    ) -> None:
        self.node = node
        self.events = events  # what Metrics records (cluster/metrics.py)
        self.proposer = proposer
        self.fsm = fsm
        self.datacenter = datacenter
        # Stream status per peering ID (Consul's tracker; never replicated): written here,
        # read by the API and metrics through the read-only `streams` view.
        self._status: dict[str, dict[str, Any]] = {}
        self.streams: Mapping[str, dict[str, Any]] = MappingProxyType(self._status)
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
        # when the acceptor pushes its server addresses (see Dialer.set_server_addresses).
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
        self.replication = replication  # replicated resources over live streams

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

    def leader_peering_addr(self) -> str:
        leader = self.node.leader()
        if leader is None or (leader == self.node.self_addr and not self.node.is_leader()):
            return ""
        return self.fsm.servers_view().get(leader, {}).get("PeeringAddr", "")

    def _entry(self, peering_id: str) -> dict[str, Any]:
        """The status of a peering whose stream is up (or being formed)."""
        entry = self._status.get(peering_id)
        if entry is None:
            entry = self._status[peering_id] = empty_status()
        entry["ImportedServices"] = entry["ImportedServices"] or []
        entry["ExportedServices"] = entry["ExportedServices"] or []
        return entry

    def note_error(self, peering_id: str, reason: str) -> None:
        """Keep the reason of the last failure where reads show it (StreamStatus.LastError)."""
        self._status.setdefault(peering_id, empty_status())["LastError"] = reason

    async def _install_live(self, live: LiveStream) -> None:
        """The newest authenticated stream of a peering wins (e.g. after a failover)."""
        old = self.live.get(live.peering_id)
        if old is not None:
            await old.stop(UNAVAILABLE, "superseded by a newer stream for this peering")
        self.live[live.peering_id] = live

    def _drop_live(self, live: LiveStream) -> None:
        """`live` ended: forget it (unless a newer stream replaced it) and start the peering's
        re-verification clock."""
        if self.live.get(live.peering_id) is live:
            del self.live[live.peering_id]
            self._stream_ended(live.peering_id)

    def _stream_ended(self, pid: str) -> None:
        self._last_ok[pid] = self._now()
        self._look_again(pid)

    def _look_again(self, pid: str) -> None:
        """Have the leader loop look at `pid` on its next pass (cluster/peering/reconciler.py)."""
        self._dirty.add(pid)
        self._kick.set()

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
        self._status.pop(peering_id, None)

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
            self._drop_live(live)
            await self._fail(pid, str(e), cond=lambda: pid not in self.live)
            return "again"
        finally:
            if self.replication is not None:
                await self.replication.detach(session)

    async def terminate(self, peering_id: str) -> None:
        """Send Terminated over this peering's stream (if one is up) and stop dialing it."""
        live = self.live.get(peering_id)
        if live is not None:
            log.info("peering %s: sending Terminated", peering_id)
            await live.terminate()
        dialer = self._dialers.pop(peering_id, None)
        if dialer is not None:
            dialer[1].cancel()
        self._status.pop(peering_id, None)

    async def close(self) -> None:
        """Server shutdown: tell peers (they retry elsewhere) and release the client session."""
        await asyncio.gather(
            *(lv.stop(UNAVAILABLE, "server shutting down") for lv in list(self.live.values())),
            return_exceptions=True,
        )
        if self._session is not None:
            await self._session.close()
