"""The importing half of one peer stream: apply what the other cluster sends, through Raft.

Responses are queued by the stream's reader (which must never wait on Raft, or heartbeats would
go unread) and applied here in batches, in order:

- ExportedService snapshots are coalesced per service (the newest wins; the older nonces are
  answered with its outcome) and proposed concurrently - one `import` command each, which
  replaces everything imported for (peer, service); re-applying a snapshot changes nothing;
- an ExportedServiceList is a barrier: the snapshots before it are applied first, then one
  `prune` command deletes every service imported from this peer that the list does not name;
- PeeringServerAddresses are handed to the reconciler (the dialer's PeerServerAddresses).

Each response is then ACKed, or NACKed: InvalidArgument for a malformed one (nothing applied),
Unavailable when Raft could not commit it now (the exporter sends it again). Neither ends the
stream or stops this loop.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..commands import Command
from ..metrics import NO_EVENTS, Events
from .resources import (
    DELETE,
    INTERNAL,
    INVALID_ARGUMENT,
    URL_SERVER_ADDRESSES,
    URL_SERVICE,
    URL_SERVICE_LIST,
    URL_TRUST_BUNDLE,
    BadMessage,
    Response,
    ack,
    nack,
    parse_addresses,
    parse_service,
    parse_service_list,
)

log = logging.getLogger("peerplane.replication")

MAX_QUEUED = 4096  # responses waiting to be applied; more are NACKed Unavailable
CONCURRENCY = 64  # import commands in flight at once (PySyncObj batches them into few appends)


class ImportTarget(Protocol):
    """What the importer reads and proposes (replicated state only)."""

    def imported_services(self, peer_name: str) -> list[str]: ...

    def import_command(self, peering_id: str, peer_name: str, service: str,
                       nodes: list[dict[str, Any]]) -> Command: ...

    def prune_command(self, peering_id: str, peer_name: str, keep: list[str]) -> Command: ...


class ApplyFailed(Exception):
    """A proposal that did not commit (code says whether sending it again can help)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Propose = Callable[[Command], Awaitable[dict[str, Any]]]  # raises ApplyFailed
Reply = Callable[[dict[str, Any]], Awaitable[None]]


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


class Importer:
    def __init__(self, target: ImportTarget, peering_id: str, peer_name: str,
                 status: dict[str, Any],
                 propose: Propose, reply: Reply,
                 set_addresses: Callable[[list[str]], Awaitable[None]],
                 events: Events = NO_EVENTS) -> None:
        self.target = target
        self.events = events
        self.peering_id = peering_id
        self.peer_name = peer_name
        self.status = status
        self.propose = propose
        self.reply = reply
        self.set_addresses = set_addresses
        self._queue: list[Response] = []
        self._busy = 0
        self._event = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._answered: set[str] = set()  # nonces of the current batch already answered
        status["ImportedServices"] = sorted(target.imported_services(peer_name))
        status.setdefault("ImportLastApplied", None)
        self._pending()

    def _pending(self) -> None:
        self.status["ImportPending"] = len(self._queue) + self._busy

    def offer(self, resp: Response) -> bool:
        """Queue a response; False when MAX_QUEUED are already waiting (the caller NACKs it
        Unavailable, so a flooding peer cannot make this server hold without bound)."""
        if len(self._queue) >= MAX_QUEUED:
            return False
        self._queue.append(resp)
        self._pending()
        self._event.set()
        return True

    async def run(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            batch, self._queue = self._queue, []
            self._busy = len(batch)
            self._answered = set()
            try:
                await self._apply(batch)
            except Exception as e:  # noqa: BLE001 - answer what is left, take the next batch
                log.exception("importing from %s failed", self.peer_name)
                for resp in batch:
                    if resp.nonce not in self._answered:
                        await self._answer(resp, (INTERNAL, f"{type(e).__name__}: {e}"))
            finally:
                self._busy = 0
                self._pending()

    async def _answer(self, resp: Response, error: tuple[str, str] | None) -> None:
        self._answered.add(resp.nonce)
        self._busy = max(0, self._busy - 1)
        self._pending()
        if error is None:
            self.events.replication("import", resp.url.rsplit(".", 1)[-1], "ack")
            await self.reply(ack(resp.url, resp.nonce))
        else:
            self.events.replication("import", resp.url.rsplit(".", 1)[-1], "nack")
            log.info("peer %s: NACK %s %s: %s", self.peer_name, resp.url.rsplit(".", 1)[-1],
                     resp.resource_id, error[1])
            self.status["LastRecvError"] = error[1]
            await self.reply(nack(resp.url, resp.nonce, *error))

    def _applied(self) -> None:
        self.status["ImportLastApplied"] = _now_rfc3339()

    async def _apply(self, batch: list[Response]) -> None:
        snaps: dict[str, tuple[list[dict[str, Any]], list[Response]]] = {}
        for resp in batch:
            try:
                if resp.url == URL_SERVICE:
                    nodes = [] if resp.operation == DELETE else parse_service(
                        resp.resource, resp.resource_id)
                    older = snaps.pop(resp.resource_id, ([], []))[1]
                    snaps[resp.resource_id] = (nodes, [*older, resp])
                elif resp.url == URL_SERVICE_LIST:
                    names = parse_service_list(resp.resource)
                    await self._flush(snaps)
                    snaps = {}
                    await self._answer(resp, await self._prune(names))
                elif resp.url == URL_SERVER_ADDRESSES:
                    await self.set_addresses(parse_addresses(resp.resource))
                    self._applied()
                    await self._answer(resp, None)
                elif resp.url == URL_TRUST_BUNDLE:
                    await self._answer(resp, None)  # no mesh CA to store; accepted, ignored
                else:
                    raise BadMessage(f"received response for unknown resource type {resp.url!r}")
            except BadMessage as e:
                await self._answer(resp, (INVALID_ARGUMENT, str(e)))
        await self._flush(snaps)

    async def _one(self, cmd: Command) -> tuple[str, str] | None:
        async with self._slots:
            try:
                await self.propose(cmd)
            except ApplyFailed as e:
                return e.code, str(e)
            except Exception as e:  # noqa: BLE001 - one bad apply must not stop the importer
                log.exception("import command failed")
                return INTERNAL, f"{type(e).__name__}: {e}"
        return None

    async def _flush(self, snaps: dict[str, tuple[list[dict[str, Any]], list[Response]]]) -> None:
        if not snaps:
            return
        names = list(snaps)
        outcomes = await asyncio.gather(*(
            self._one(self.target.import_command(self.peering_id, self.peer_name, n,
                                                 snaps[n][0]))
            for n in names
        ))
        if any(o is None for o in outcomes):
            self._applied()
        for name, outcome in zip(names, outcomes, strict=True):
            for resp in snaps[name][1]:
                await self._answer(resp, outcome)

    async def _prune(self, names: list[str]) -> tuple[str, str] | None:
        """Delete, in one command, every service imported from this peer that the list does
        not name; the list becomes ImportedServices."""
        self.status["ImportedServices"] = names
        outcome = await self._one(
            self.target.prune_command(self.peering_id, self.peer_name, names))
        if outcome is None:
            self._applied()
        return outcome
