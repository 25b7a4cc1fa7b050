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

from ..fsm import ACTIVE, DELETING, ESTABLISHING, should_dial
from ..state.base import Touched
from ..state.transitions import HEARTBEAT_TIMEOUT
from .acceptor import Acceptor
from .core import DEFAULT_HEARTBEAT, DEFAULT_HEARTBEAT_TIMEOUT, log
from .dialer import Dialer
from .peerstream import FAILED_PRECONDITION

__all__ = ["DEFAULT_HEARTBEAT", "DEFAULT_HEARTBEAT_TIMEOUT", "PeeringService"]

NOT_LEADER = "node is not a leader anymore; cannot continue streaming"


class PeeringService(Acceptor, Dialer):
    """Acceptor + dialer + the leader loop: driven by what changed, plus its own deadlines."""

    def on_change(self, touched: Touched | None) -> None:
        """The FSM applied something (event loop): look again at the peerings it touched
        (`None`: a snapshot was restored, look at every one). Not leading: nothing to note,
        a new leader looks at every peering once anyway."""
        if not self._leading:
            return
        if touched is None:
            self._full = True
        else:
            self._dirty.update(key for table, key in touched if table == "peerings")
        self._kick.set()

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
            pids = set(self.fsm.peering_ids()) | set(self._dialers) | set(self._status)
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
            for table in (self._status, self._last_ok, self._locks, self._dialed,
                          self._reached):
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
        self._status.clear()
        self._last_ok.clear()
        self._dialed.clear()
        self._reached.clear()
        self._dirty.clear()
        self._deadlines.clear()
        log.info("peering reconciler stopped")

