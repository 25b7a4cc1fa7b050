"""Replication over the peer stream: one session per live stream, both directions at once.

`Replication` lives on every server; streams exist only on the leader, so only the leader
exports and imports. When a stream is up (`attach`, called by the reconciler for either end),
the session:

- subscribes to the peer's ExportedService and ExportedServiceList (the dialer also to
  PeeringServerAddresses), as Consul's streams do;
- answers the peer's subscriptions with an `Exporter` (cluster/peering/exporter.py) and applies
  the peer's responses with an `Importer` (cluster/peering/importer.py);
- numbers every response it sends (per-stream nonce) and tracks which are not yet ACKed.

The tracker entry of the stream (`StreamStatus` in peering reads) gets `ImportedServices`,
`ExportedServices` and, beyond Consul (its issue #22868: ACTIVE while the imported catalog is
stale), import freshness: `ImportLastApplied` (time of the last applied replication message),
`ImportPending` (received, not yet applied), `ExportUnacked` (sent, not yet ACKed), plus
`LastAck`, `LastNack`, `LastNackMessage`, `LastRecvError`.

Deleting or terminating a peering removes its imports through Raft in bounded batches (`purge`,
`run_cleanup`) before the record goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..commands import Command
from ..fsm import DELETING, FSM, TERMINATED
from ..metrics import NO_EVENTS, Events
from ..proposer import NotApplied, UnknownOutcome
from ..state.base import Touched
from .exporter import Exporter, ExportSource
from .importer import ApplyFailed, Importer, ImportTarget
from .peerstream import MAX_FRAME, pack
from .resources import (
    INTERNAL,
    INVALID_ARGUMENT,
    KNOWN_URLS,
    REQUEST,
    RESPONSE,
    UNAVAILABLE,
    URL_SERVER_ADDRESSES,
    URL_SERVICE,
    URL_SERVICE_LIST,
    BadMessage,
    nack,
    nonce_str,
    parse_request,
    parse_response,
    response,
    subscribe,
)

log = logging.getLogger("peerplane.replication")

PURGE_BATCH = 256  # imported records deleted per Raft command
PURGE_PAUSE = 0.01  # between purge commands, so a large purge never hogs the log


class Catalog(ExportSource, ImportTarget, Protocol):
    def purge_command(self, peer_name: str, limit: int) -> Command: ...

    def imported_count(self, peer_name: str) -> int: ...


class Stream(Protocol):
    """The part of a live peer stream (cluster.peerstream.LiveStream) a session uses."""

    peering_id: str
    role: str
    status: dict[str, Any]
    on_frame: Callable[[dict[str, Any]], Awaitable[None]] | None

    async def send(self, frame: dict[str, Any]) -> None: ...


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


class Session:
    """Replication over one live stream: its nonces, what it sent and not yet had answered,
    its exporter and importer."""

    def __init__(self, repl: Replication, live: Stream, peer_name: str) -> None:
        self.live = live
        self.peer_name = peer_name
        self.events = repl.events
        self.status = live.status
        self._nonce = 0
        self._unacked: dict[str, tuple[str, str]] = {}  # nonce -> (url, resource id)
        self.status.update(ExportUnacked=0, ExportedServices=[])
        self.status.setdefault("LastNackMessage", None)
        self.exporter = Exporter(repl.catalog, peer_name, self.status, self._send_response)

        async def set_addresses(addrs: list[str]) -> None:
            await repl.set_addresses(live.peering_id, addrs)

        self.importer = Importer(repl.catalog, live.peering_id, peer_name, self.status,
                                 repl.propose_import, live.send, set_addresses, repl.events)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.live.on_frame = self.on_frame
        self._tasks = [asyncio.create_task(self.exporter.run(), name="export"),
                       asyncio.create_task(self.importer.run(), name="import")]
        for task in self._tasks:
            task.add_done_callback(_log_crash)
        urls = [URL_SERVICE, URL_SERVICE_LIST]
        if self.live.role == "dialer":
            urls.append(URL_SERVER_ADDRESSES)
        for url in urls:
            await self.live.send(subscribe(url))

    async def close(self) -> None:
        self.exporter.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _send_response(self, url: str, resource_id: str, resource: dict[str, Any]) -> None:
        frame = response(nonce_str(self._nonce + 1), url, resource_id, resource)
        size = len(pack(frame))
        if size > MAX_FRAME - 1024:
            # The peer would close the stream (1009) and it would flap forever: skip this one
            # resource, say so where reads show it, keep replicating the rest.
            self.status["LastSendError"] = (
                f"{url.rsplit('.', 1)[-1]} {resource_id!r} is {size} bytes, over the "
                f"{MAX_FRAME}-byte message limit; not sent")
            log.error("peer %s: %s", self.peer_name, self.status["LastSendError"])
            return
        self._nonce += 1
        self._unacked[frame["Nonce"]] = (url, resource_id)
        self.status["ExportUnacked"] = len(self._unacked)
        self.events.replication("export", url.rsplit(".", 1)[-1], "sent")
        await self.live.send(frame)

    async def on_frame(self, frame: dict[str, Any]) -> None:
        """Called by the stream's reader for every non-heartbeat frame; never waits on Raft."""
        kind = frame.get("Type")
        try:
            if kind == RESPONSE:
                resp = parse_response(frame)
                if not self.importer.offer(resp):
                    await self.live.send(nack(resp.url, resp.nonce, UNAVAILABLE,
                                              "too many responses waiting to be applied"))
            elif kind == REQUEST:
                self._on_request(frame)
        except BadMessage as e:
            # A response without a usable nonce cannot be NACKed; note it and go on.
            log.info("peer %s: unusable %s: %s", self.peer_name, kind, e)
            self.status["LastRecvError"] = str(e)

    def _on_request(self, frame: dict[str, Any]) -> None:
        req = parse_request(frame)
        if not req.nonce:
            if req.url in KNOWN_URLS:
                self.exporter.subscribe(req.url)
            else:
                raise BadMessage(f"subscription request to unknown resource URL: {req.url}")
            return
        sent = self._unacked.pop(req.nonce, None)
        self.status["ExportUnacked"] = len(self._unacked)
        if sent is None:
            return  # a stray or repeated answer
        url, rid = sent
        if req.error is None:
            self.status["LastAck"] = _now()
            self.exporter.acked(url, rid)
            self.events.replication("export", url.rsplit(".", 1)[-1], "ack")
            return
        code, message = req.error
        self.status["LastNack"] = _now()
        self.status["LastNackMessage"] = f"client peer was unable to apply resource: {message}"
        self.events.replication("export", url.rsplit(".", 1)[-1], "nack")
        log.warning("peer %s could not apply %s %s: %s %s", self.peer_name, url, rid, code,
                    message)
        self.exporter.nacked(url, rid, retry=code != INVALID_ARGUMENT)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("replication task %s crashed", task.get_name(), exc_info=task.exception())


class Replication:
    def __init__(self, fsm: FSM, catalog: Catalog,
                 submit: Callable[[Command], Awaitable[dict[str, Any]]],
                 set_addresses: Callable[[str, list[str]], Awaitable[None]],
                 events: Events = NO_EVENTS) -> None:
        """`submit`: the proposer's (the FSM's result, a refusal included; raises NotApplied
        or UnknownOutcome); `events`: what Metrics records (cluster/metrics.py)."""
        self.fsm = fsm
        self.events = events
        self.catalog = catalog
        self.submit = submit
        self._set_addresses = set_addresses
        self.sessions: set[Session] = set()
        self._kick = asyncio.Event()

    def on_change(self, touched: Touched | None = None) -> None:
        """The FSM applied something (event loop; `touched` = the (table, key) pairs, None =
        anything): exporters look at the local services it changed, the exported-services entry
        and the servers; the cleanup routine looks again when a peering changed."""
        if touched is None or ("catalog", None) in touched:
            for s in self.sessions:
                s.exporter.wake()
        else:
            services = {key[1] for table, key in touched
                        if table == "catalog" and isinstance(key, tuple) and key[0] == ""}
            entry = any(table == "config_entries" for table, _ in touched)
            servers = any(table == "servers" for table, _ in touched)
            if services or entry or servers:
                for s in self.sessions:
                    s.exporter.changed(services, entry, servers)
        if touched is None or any(table == "peerings" for table, _ in touched):
            self._kick.set()

    notify = on_change

    async def set_addresses(self, peering_id: str, addrs: list[str]) -> None:
        await self._set_addresses(peering_id, addrs)

    async def propose_import(self, cmd: Command) -> dict[str, Any]:
        try:
            res = await self.submit(cmd)
        except (NotApplied, UnknownOutcome) as e:
            raise ApplyFailed(UNAVAILABLE, f"not committed: {e}") from None
        if "error" in res:
            code = INVALID_ARGUMENT if res.get("kind") == "invalid" else INTERNAL
            raise ApplyFailed(code, str(res["error"]))
        return res

    async def attach(self, live: Stream) -> Session | None:
        rec = self.fsm.by_id(live.peering_id)
        if rec is None:
            return None
        session = Session(self, live, rec["Name"])
        self.sessions.add(session)
        try:
            await session.start()
        except Exception:  # noqa: BLE001 - the stream's own reader will see it closed
            await self.detach(session)
            return None
        return session

    async def detach(self, session: Session | None) -> None:
        if session is None:
            return
        self.sessions.discard(session)
        await session.close()

    # ---- removing what a peering imported ----

    async def purge(self, peer_name: str, still: Callable[[], bool] = lambda: True) -> bool:
        """Delete everything imported from `peer_name`, PURGE_BATCH records per Raft command,
        while `still()` holds (a TERMINATED peering re-established meanwhile keeps its new
        imports). True when nothing is left (the caller may then remove the peering)."""
        while self.catalog.imported_count(peer_name):
            if not still():
                return False
            try:
                res = await self.submit(self.catalog.purge_command(peer_name, PURGE_BATCH))
            except (NotApplied, UnknownOutcome) as e:
                log.info("purging imports of %s: %s", peer_name, e)
                return False
            if "error" in res:
                log.warning("purging imports of %s refused: %s", peer_name, res["error"])
                return False
            self.events.replication("import", "purge", "batch")
            await asyncio.sleep(PURGE_PAUSE)
        return True

    async def run_cleanup(self) -> None:
        """Leader routine: a TERMINATED peering keeps its record but loses its imports (as in
        Consul); DELETING ones are purged by the deletion routine before removal."""
        while True:
            self._kick.clear()
            ended = sorted(self.fsm.ids_in_state(TERMINATED) | self.fsm.ids_in_state(DELETING))
            for pid in ended:
                rec = self.fsm.by_id(pid)
                if rec is not None and self.catalog.imported_count(rec["Name"]):
                    await self.purge(rec["Name"], still=lambda pid=pid: (
                        self.fsm.by_id(pid) or {}).get("State") in (TERMINATED, DELETING))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), 5.0)
