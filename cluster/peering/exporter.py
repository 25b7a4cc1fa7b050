"""The exporting half of one peer stream: what this cluster sends to the other one.

Driven by changes, never by a timer: `changed()` gets what an FSM apply touched (local service
names, the exported-services entry, the servers); `wake()` asks for a full look (a new
subscription, a restore). A pass looks only at touched services that are exported to this
peer (all exported ones after a full look or an entry change): a snapshot is built only for a
service whose index moved, and sent only when its content digest differs from what this stream
already carried. Nothing scans the whole catalog.

A new stream starts with nothing sent, so its first pass carries the full state: the service
list, then every exported service - that is how a new leader on either side resumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .resources import (
    ADDRESSES_ID,
    LIST_ID,
    URL_SERVER_ADDRESSES,
    URL_SERVICE,
    URL_SERVICE_LIST,
    digest,
    service_snapshot,
)

log = logging.getLogger("peerplane.replication")

RESEND_FIRST = 0.2  # a NACKed (retryable) resource is sent again after this, doubling
RESEND_CAP = 30.0


class ExportSource(Protocol):
    """What the exporter reads from the local (replicated) state."""

    def exported_to(self, peer_name: str) -> list[str]: ...

    def service_instances(self, service: str) -> list[dict[str, Any]]: ...

    def service_index(self, service: str) -> int | None: ...

    def server_addresses(self) -> list[str]: ...


Send = Callable[[str, str, dict[str, Any]], Awaitable[None]]  # (url, resource id, resource)


class Exporter:
    def __init__(self, source: ExportSource, peer_name: str, status: dict[str, Any],
                 send: Send) -> None:
        self.source = source
        self.peer_name = peer_name
        self.status = status
        self.send = send
        self.subscribed: set[str] = set()
        self._list: list[str] | None = None  # the last service list sent
        self._sent: dict[str, tuple[int | None, bytes]] = {}  # service -> (index, digest) sent
        self._addresses: list[str] | None = None
        self._resend: set[tuple[str, str]] = set()  # NACKed (retryable): send again
        self._backoff: dict[tuple[str, str], float] = {}
        self._lower: dict[str, str] = {}  # lowercased -> exported name, of _list
        self._full = True
        self._dirty: set[str] = set()
        self._entry_changed = False
        self._servers_changed = False
        self._wake = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()

    def wake(self) -> None:
        """Look at everything (a subscription, a restore, a change we know nothing about)."""
        self._full = True
        self._wake.set()

    def changed(self, services: set[str], entry: bool, servers: bool) -> None:
        """What the FSM touched: local services (lowercased names), the exported-services
        entry, the servers - the next pass looks only at those."""
        self._dirty |= services
        self._entry_changed |= entry
        self._servers_changed |= servers
        self._wake.set()

    def subscribe(self, url: str) -> None:
        if url not in self.subscribed:
            self.subscribed.add(url)
            self.wake()

    def acked(self, url: str, resource_id: str) -> None:
        self._backoff.pop((url, resource_id), None)

    def nacked(self, url: str, resource_id: str, retry: bool) -> None:
        """The peer could not apply it. Retryable: send again after a growing pause; otherwise
        wait for the content to change (sending the same bad thing again cannot help)."""
        if not retry:
            return
        key = (url, resource_id)
        delay = self._backoff.get(key, RESEND_FIRST)
        self._backoff[key] = min(RESEND_CAP, delay * 2)

        def due() -> None:
            self._resend.add(key)
            self._wake.set()

        handle = asyncio.get_running_loop().call_later(delay, due)
        self._timers.add(handle)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._timers = {h for h in self._timers if not h.cancelled()}
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - keep exporting; the pass is tried again
                log.exception("exporting to %s failed", self.peer_name)
                await asyncio.sleep(RESEND_FIRST)
                self.wake()

    async def sync(self) -> None:
        full, self._full = self._full, False
        dirty, self._dirty = self._dirty, set()
        entry, self._entry_changed = self._entry_changed, False
        servers, self._servers_changed = self._servers_changed, False
        resend, self._resend = self._resend, set()
        try:
            await self._pass(full, dirty, entry, servers, resend)
        except BaseException:
            # What this pass took is still owed: a resend that came due is not lost (the full
            # pass that follows skips a service whose index did not move).
            self._dirty |= dirty
            self._entry_changed |= entry
            self._servers_changed |= servers
            self._resend |= resend
            raise

    async def _pass(self, full: bool, dirty: set[str], entry: bool, servers: bool,
                    resend: set[tuple[str, str]]) -> None:
        again_addrs = (URL_SERVER_ADDRESSES, ADDRESSES_ID) in resend
        if URL_SERVER_ADDRESSES in self.subscribed and (full or servers or again_addrs):
            addrs = self.source.server_addresses()
            if addrs and (addrs != self._addresses or again_addrs):
                self._addresses = addrs
                await self.send(URL_SERVER_ADDRESSES, ADDRESSES_ID, {"Addresses": addrs})
        if not self.subscribed & {URL_SERVICE, URL_SERVICE_LIST}:
            return
        again_list = (URL_SERVICE_LIST, LIST_ID) in resend
        # The list changes with the entry, or (an entry exporting "*") with a local service
        # that appears or goes: looked at again when anything changed (names only).
        if full or entry or dirty or again_list or self._list is None:
            names = sorted(set(self.source.exported_to(self.peer_name)))
            if names != self._list or again_list:
                self._list = names
                self._lower = {n.lower(): n for n in names}
                self.status["ExportedServices"] = names
                if URL_SERVICE_LIST in self.subscribed:
                    await self.send(URL_SERVICE_LIST, LIST_ID, {"Services": names})
            keep = set(self._lower.values())
            for gone in [n for n in self._sent if n not in keep]:
                del self._sent[gone]  # exported again later: sent again in full
        if URL_SERVICE not in self.subscribed:
            return
        if full or entry:
            check = list(self._list or [])
        else:  # only what changed, and what the peer asked to get again
            check = sorted({self._lower[n] for n in dirty if n in self._lower}
                           | {rid for url, rid in resend
                              if url == URL_SERVICE and rid.lower() in self._lower})
        for name in check:
            index = self.source.service_index(name)
            prev = self._sent.get(name)
            again = (URL_SERVICE, name) in resend
            if prev is not None and index is not None and prev[0] == index and not again:
                continue
            snap = service_snapshot(self.source.service_instances(name))
            d = digest(snap)
            if not (prev is not None and prev[1] == d and not again):
                await self.send(URL_SERVICE, name, snap)
            self._sent[name] = (index, d)  # once sent: a send that failed is owed again
