"""The dialer end of a peering stream, on the leader: the secret exchange for
`POST /v1/peering/establish`, and one dial task per dialing peering that holds an active stream
secret, with backoff (see cluster/peering/reconciler.py's docstring for the timings)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from ..fsm import ACTIVE, DELETING, TERMINATED, Record, should_dial
from ..state.transitions import ADDRESSES_RECEIVED, STREAM_OPEN
from .client import dial_stream, exchange_secret
from .core import PeeringCore
from .peerstream import (
    INVALID_ARGUMENT,
    OPEN,
    OPEN_TIMEOUT,
    UNAVAILABLE,
    LiveStream,
    Moved,
    PeerTerminated,
    Rejected,
    StreamError,
)

log = logging.getLogger("peerplane.reconciler")


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


class Dialer(PeeringCore):
    async def exchange(self, addresses: list[str], server_name: str, ca_pems: list[str],
                       peer_id: str, establishment_secret: str) -> str:
        return await exchange_secret(
            self.session, addresses, server_name, ca_pems, peer_id, establishment_secret,
            events=self.events,
        )

    async def _dial_loop(self, peering_id: str, secret: str) -> None:
        ring = _Ring()
        counts = {"redirects": 0, "failures": 0}
        self._last_ok.setdefault(peering_id, self._now())

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            self.events.reconciler_retry(
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
        hinted = bool(ring.leader)  # a follower named this address as its leader
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
            # A leader hint we cannot reach (an in-cluster name behind the peer's load
            # balancer): go back to the addresses we have at the redirect pace, not backed off.
            raise _Retry(redirect=hinted and not e.definitive) from None

        entry = self._entry(pid)
        live = LiveStream(
            peering_id=pid, role="dialer", secret=secret, ws=ws, status=entry,
            interval=self.heartbeat, timeout=self.heartbeat_timeout,
            still_leader=self.node.is_leader, events=self.events,
        )
        live.mark_receive(True)  # the acceptor's first Heartbeat accepted the Open
        live.status["LastSend"] = live.status["LastReceive"]
        await self._install_live(live)
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
            self._drop_live(live)
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
