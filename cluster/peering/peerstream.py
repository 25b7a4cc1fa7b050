"""The peer stream: what two clusters say to each other over TLS on the peering port.

Two endpoints, both served by every server of the accepting cluster (only its leader acts):

- `POST /peerstream/v1/exchange-secret` - JSON `{PeerID, EstablishmentSecret}` ->
  `{StreamSecret}`. The establishment secret of a token is single use: the exchange is one
  Raft command (`exchange_secret`) that the FSM validates, so of two concurrent exchanges of
  one token exactly one wins. Refused: 403 `{"Code": "PermissionDenied", ...}`.
- `GET /peerstream/v1/stream` - a websocket of msgpack frames (maps with a `Type`):
  `Open{PeerID, StreamSecretID, Remote{Partition, Datacenter}}` (dialer -> acceptor, first
  frame), `Heartbeat{}`, `Terminated{}`, `Error{Code, Message, LeaderAddress?}` (before a
  close), and the replication messages `Request`/`Response` (cluster/peering/resources.py).
  Unknown types are ignored. The acceptor answers a valid Open with a Heartbeat.

A follower answers both with Code `FailedPrecondition` and the leader's peering address (when
it knows one) so the dialer moves on at once - Consul's LeaderAddress detail.

This module holds the wire format, one live stream's pump and the listener (the dialer's
client for both endpoints is cluster/peering/client.py); `cluster.peering.reconciler.
PeeringService` owns the decisions (state writes, dialing).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import msgpack
from aiohttp import WSMsgType, web

from ..gotime import rfc3339
from ..metrics import NO_EVENTS, Events

if TYPE_CHECKING:
    from .reconciler import PeeringService

log = logging.getLogger("peerplane.peerstream")

EXCHANGE_PATH = "/peerstream/v1/exchange-secret"
STREAM_PATH = "/peerstream/v1/stream"

OPEN = "Open"
HEARTBEAT = "Heartbeat"
TERMINATED_FRAME = "Terminated"
ERROR = "Error"

# gRPC-style codes carried in Error frames and exchange answers.
FAILED_PRECONDITION = "FailedPrecondition"  # not the leader (LeaderAddress says who is)
UNAVAILABLE = "Unavailable"  # shutting down / transient; retry soon
PERMISSION_DENIED = "PermissionDenied"
INVALID_ARGUMENT = "InvalidArgument"
ABORTED = "Aborted"

ESTABLISHMENT_DENIED = "invalid peering establishment secret"
EXCHANGE_WINDOW = 3.0  # Consul: 3 s of attempts, 150 ms jittered sleeps, 2 s per dial
EXCHANGE_DIAL_TIMEOUT = 2.0
MAX_FRAME = 8 << 20  # a larger websocket message closes the stream with 1009 (too big)
EXCHANGE_MAX_BODY = 64 << 10
EXCHANGE_READ_TIMEOUT = 5.0
OPEN_TIMEOUT = 10.0


def pack(frame: dict[str, Any]) -> bytes:
    return msgpack.packb(frame, use_bin_type=True)


class FrameError(ValueError):
    """A peer-stream frame that is not a msgpack map with a string `Type`."""


def unpack(data: bytes) -> dict[str, Any]:
    """Decode one frame. Whatever is wrong with it (bad or truncated msgpack, trailing bytes,
    nesting too deep, bad UTF-8, non-string map keys, no string Type, too large) raises
    FrameError and nothing else."""
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes is over the limit of {MAX_FRAME} bytes")
    try:
        frame = msgpack.unpackb(data, raw=False)
    except Exception as e:  # noqa: BLE001 - msgpack raises ValueError kinds, also others
        detail = str(e)[:200] or type(e).__name__
        raise FrameError(f"malformed msgpack: {detail}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("Type"), str):
        raise FrameError("frame is not a map with a Type")
    return frame


# ---- outcomes of a stream ----


class StreamError(Exception):
    """The stream failed (the peering shows FAILING with this text as the reason).

    `definitive` errors (TLS verification) will not heal by retrying the same way, so the
    peering shows FAILING at once rather than after the heartbeat timeout."""

    def __init__(self, message: str, definitive: bool = False) -> None:
        super().__init__(message)
        self.definitive = definitive


class Moved(Exception):
    """The other side is not (or no longer) the leader; dial `leader` next (may be empty)."""

    def __init__(self, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class Rejected(StreamError):
    """The acceptor refused the Open (bad secret, unknown peering, wrong end)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, definitive=True)
        self.code = code


class PeerTerminated(Exception):
    """The other side sent Terminated: the peering was deleted there."""


# ---- one live stream (either end) ----


@dataclass
class LiveStream:
    peering_id: str
    role: str  # "dialer" | "acceptor"
    secret: str
    ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse
    status: dict[str, Any]  # the tracker entry rendered as StreamStatus
    interval: float
    timeout: float
    still_leader: Callable[[], bool]
    on_frame: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    events: Events = NO_EVENTS
    last_receive: float = 0.0
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closing: str = ""  # why we are closing it ourselves ("" while we are not)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(pack(frame))
        self.status["LastSend"] = rfc3339(_wall())

    def mark_receive(self, heartbeat: bool) -> None:
        self.last_receive = asyncio.get_running_loop().time()
        now = rfc3339(_wall())
        self.status["LastReceive"] = now
        if heartbeat:
            self.status["LastHeartbeat"] = now
            self.events.stream_heartbeat("received")

    async def pump(self) -> str:
        """Heartbeat and receive until the stream ends. Returns why *we* closed it ("terminate",
        "stop", ...); raises PeerTerminated, Moved or StreamError when the other side ended it
        or went silent."""
        loop = asyncio.get_running_loop()
        if not self.last_receive:
            self.last_receive = loop.time()
        beat = asyncio.create_task(self._heartbeats())
        try:
            while True:
                if self._closing:
                    return self._closing
                if not self.still_leader():
                    await self.stop(FAILED_PRECONDITION,
                                    "node is not a leader anymore; cannot continue streaming")
                    return "not leader"
                remaining = self.last_receive + self.timeout - loop.time()
                if remaining <= 0:
                    raise StreamError("heartbeat timeout")
                try:
                    msg = await self.ws.receive(timeout=min(remaining, 0.5))
                except TimeoutError:
                    continue
                if msg.type == WSMsgType.BINARY:
                    try:
                        frame = unpack(msg.data)
                    except FrameError as e:  # garbage from the peer: say why, then close
                        await self.stop(INVALID_ARGUMENT, f"invalid frame: {e}",
                                        close_code=aiohttp.WSCloseCode.INVALID_TEXT)
                        raise StreamError(f"invalid frame from the peer: {e}") from None
                    await self._handle(frame)
                    continue
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    if self._closing:
                        return self._closing
                    if msg.type == WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY:
                        raise Moved("peer went away")
                    raise StreamError("stream ended unexpectedly")
                if msg.type == WSMsgType.ERROR:
                    if self._closing:
                        return self._closing
                    raise StreamError(
                        f"unexpected error receiving from the stream: {self.ws.exception()}"
                    )
                # text/ping/pong frames carry nothing for us
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(), 1.0)
            self.done.set()

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["Type"]
        self.mark_receive(kind == HEARTBEAT)
        if kind == TERMINATED_FRAME:
            raise PeerTerminated()
        if kind == ERROR:
            code, message = str(frame.get("Code", "")), str(frame.get("Message", ""))
            if code in (FAILED_PRECONDITION, UNAVAILABLE):
                raise Moved(message, str(frame.get("LeaderAddress") or ""))
            raise Rejected(code, message)
        if self.on_frame is not None and kind != HEARTBEAT:
            await self.on_frame(frame)

    async def _heartbeats(self) -> None:
        while True:
            if self._closing or self.ws.closed:
                return
            with contextlib.suppress(Exception):
                await self.send({"Type": HEARTBEAT})
                self.events.stream_heartbeat("sent")
            await asyncio.sleep(self.interval)

    async def terminate(self, drain: float = 1.0) -> None:
        """Tell the peer this peering is gone, give it a moment to record that, and close."""
        if self._closing:
            return
        self._closing = "terminate"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send({"Type": TERMINATED_FRAME}), 1.0)
        # The peer closes once it has written TERMINATED; don't wait for it forever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), drain)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 1.0)

    async def stop(
        self, code: str, message: str, leader: str = "",
        close_code: int = aiohttp.WSCloseCode.OK,
    ) -> None:
        """Close without ending the peering (leadership moved, shutdown, replaced, or a
        malformed frame: then with close code 1007 and the reason)."""
        if self._closing:
            return
        self._closing = "stop"
        frame = {"Type": ERROR, "Code": code, "Message": message}
        if leader:
            frame["LeaderAddress"] = leader
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send(frame), 1.0)
        # a close reason holds at most 123 bytes of UTF-8: cut, never inside a character
        reason = message.encode()[:120].decode("utf-8", "ignore").encode()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=close_code, message=reason), 1.0)


def _wall() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


# ---- acceptor side: the listener ----


def make_listener_app(service: PeeringService) -> web.Application:
    app = web.Application(client_max_size=EXCHANGE_MAX_BODY)

    async def exchange(request: web.Request) -> web.Response:
        try:
            body = json.loads(await asyncio.wait_for(request.read(), EXCHANGE_READ_TIMEOUT))
            peer_id = str(body["PeerID"])
            secret = str(body["EstablishmentSecret"])
        except TimeoutError:  # a dialer sends it at once (its own attempt lasts 2 s)
            response = _answer(408, INVALID_ARGUMENT, "timed out reading the exchange request")
            response.force_close()
            return response
        except web.HTTPRequestEntityTooLarge:
            return _answer(413, INVALID_ARGUMENT,
                           f"exchange request too large (limit: {EXCHANGE_MAX_BODY} bytes)")
        except (ValueError, KeyError, TypeError, RecursionError):  # deep nesting: RecursionError
            return _answer(400, INVALID_ARGUMENT, "malformed exchange request")
        if not service.node.lease_holds():  # its own term's entries applied, too
            return _answer(503, FAILED_PRECONDITION,
                           "cannot exchange a peering secret on a follower node",
                           LeaderAddress=service.leader_peering_addr())
        code, result = await service.accept_exchange(peer_id, secret)
        if code == 200:
            return web.json_response({"StreamSecret": result})
        if code == 403:
            return _answer(403, PERMISSION_DENIED, result)
        return _answer(code, UNAVAILABLE, result)

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=MAX_FRAME, autoping=True)
        await ws.prepare(request)
        try:
            await service.accept(ws)
        except Exception:  # noqa: BLE001 - one bad stream must not hurt the listener
            log.exception("peer stream handler failed")
        finally:
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
        return ws

    app.router.add_post(EXCHANGE_PATH, exchange)
    app.router.add_get(STREAM_PATH, stream)
    return app


def _answer(status: int, code: str, message: str, **extra: str) -> web.Response:
    return web.json_response({"Code": code, "Message": message, **extra}, status=status)


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
