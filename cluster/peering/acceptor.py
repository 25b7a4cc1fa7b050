"""The acceptor end of a peering stream, on the leader: the secret exchange (a token's
establishment secret traded for a pending stream secret) and accepting streams (the listener
in cluster/peering/peerstream.py calls `accept`)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import aiohttp

from ..commands import ExchangeSecret
from ..fsm import ACTIVE, DELETING, TERMINATED, should_dial
from ..proposer import NotApplied, UnknownOutcome
from ..state.transitions import STREAM_OPEN
from .core import PeeringCore
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
    pack,
    secrets_equal,
    unpack,
)

log = logging.getLogger("peerplane.reconciler")


class Acceptor(PeeringCore):
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

    async def accept(self, ws: Any) -> None:
        async def refuse(code: str, message: str, leader: str = "") -> None:
            frame = {"Type": ERROR, "Code": code, "Message": message}
            if leader:
                frame["LeaderAddress"] = leader
            with contextlib.suppress(Exception):
                await ws.send_bytes(pack(frame))

        if not self.node.lease_holds():  # its own term's entries applied, too
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

        entry = self._entry(peer_id)
        entry.pop("LastError", None)
        live = LiveStream(
            peering_id=peer_id, role="acceptor", secret=given, ws=ws, status=entry,
            interval=self.heartbeat, timeout=self.heartbeat_timeout,
            still_leader=self.node.is_leader, events=self.events,
        )
        live.mark_receive(False)
        await self._install_live(live)
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
            self._drop_live(live)
