"""The dialer's side of the peer stream's two endpoints (cluster/peering/peerstream.py): the
secret exchange with the acceptor's servers, and dialing a stream up to the acceptor's first
answer."""

from __future__ import annotations

import json
import logging
import random
import ssl
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay

from ..metrics import NO_EVENTS, Events
from .peerstream import (
    ABORTED,
    ERROR,
    ESTABLISHMENT_DENIED,
    EXCHANGE_DIAL_TIMEOUT,
    EXCHANGE_PATH,
    EXCHANGE_WINDOW,
    FAILED_PRECONDITION,
    HEARTBEAT,
    MAX_FRAME,
    STREAM_PATH,
    TERMINATED_FRAME,
    UNAVAILABLE,
    Moved,
    PeerTerminated,
    Rejected,
    StreamError,
    pack,
    unpack,
)
from .tls import client_context

log = logging.getLogger("peerplane.peerstream")


class ExchangeDenied(Exception):
    """The acceptor refused the establishment secret (used, superseded or unknown)."""


class ExchangeFailed(Exception):
    """No acceptor server exchanged the secret within the retry window."""


class _Redirect(Exception):
    pass


class _AttemptFailed(Exception):
    pass


async def exchange_secret(
    session: aiohttp.ClientSession,
    addresses: list[str],
    server_name: str,
    ca_pems: list[str],
    peer_id: str,
    establishment_secret: str,
    window: float = EXCHANGE_WINDOW,
    events: Events = NO_EVENTS,
) -> str:
    """Trade a token's establishment secret for a stream secret with the acceptor's leader.

    Rotates through `addresses` for `window` seconds (150 ms jittered sleeps, none after a
    follower named its leader); TLS is verified against the token's CA and ServerName.
    """
    if not addresses:
        raise ExchangeFailed("peering token server addresses value is empty")
    sslctx = client_context(ca_pems)
    ring = list(addresses)
    state = {"next": 0, "leader": ""}
    errors: dict[str, str] = {}

    async def attempt() -> str:
        if state["leader"]:
            addr, state["leader"] = state["leader"], ""
        else:
            addr = ring[state["next"] % len(ring)]
            state["next"] += 1
        try:
            async with session.post(
                f"https://{addr}{EXCHANGE_PATH}",
                json={"PeerID": peer_id, "EstablishmentSecret": establishment_secret},
                # A fresh connection per attempt: behind a load balancer a kept-alive one
                # stays with the follower that just said "not the leader".
                headers={"Connection": "close"},
                ssl=sslctx, server_hostname=server_name,
                timeout=aiohttp.ClientTimeout(total=EXCHANGE_DIAL_TIMEOUT),
            ) as resp:
                text = await resp.text()
                try:
                    body = json.loads(text) if text else {}
                except ValueError:
                    body = {"Message": text}
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as e:
            errors[addr] = _describe(e)
            raise _AttemptFailed from None
        if resp.status == 200 and body.get("StreamSecret"):
            return str(body["StreamSecret"])
        if resp.status == 403:
            raise ExchangeDenied(body.get("Message") or ESTABLISHMENT_DENIED)
        if body.get("Code") == FAILED_PRECONDITION:
            errors[addr] = body.get("Message", "not the leader")
            if body.get("LeaderAddress"):
                state["leader"] = str(body["LeaderAddress"])
                raise _Redirect
            raise _AttemptFailed
        errors[addr] = f"unexpected response {resp.status}: {body.get('Message', text)}"
        raise _AttemptFailed

    def wait(rs: RetryCallState) -> float:
        events.reconciler_retry("exchange")
        if rs.outcome is not None and isinstance(rs.outcome.exception(), _Redirect):
            return 0.0
        return random.uniform(0.1, 0.2)

    try:
        async for attempt_ctx in AsyncRetrying(
            retry=retry_if_exception_type((_AttemptFailed, _Redirect)),
            stop=stop_after_delay(window), wait=wait, reraise=True,
        ):
            with attempt_ctx:
                return await attempt()
    except (_AttemptFailed, _Redirect):
        pass
    raise ExchangeFailed("; ".join(
        f'failed to exchange peering secret through address "{a}": {e}' for a, e in errors.items()
    ))


def _describe(e: BaseException) -> str:
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return f"tls: {e.certificate_error}"
    if isinstance(e, aiohttp.ClientConnectorError):
        return str(e.os_error) if e.os_error else str(e)
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


async def dial_stream(
    session: aiohttp.ClientSession, addr: str, server_name: str, ca_pems: list[str],
    open_frame: dict[str, Any], timeout: float,
) -> aiohttp.ClientWebSocketResponse:
    """Connect, send Open and wait for the acceptor's first answer: a Heartbeat means the stream
    is up; an Error means Moved (follower) or Rejected. Dial failures raise StreamError."""
    try:
        ws = await session.ws_connect(
            f"wss://{addr}{STREAM_PATH}", ssl=client_context(ca_pems),
            server_hostname=server_name, heartbeat=None, max_msg_size=MAX_FRAME,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as e:
        raise StreamError(
            f"failed to dial {addr}: {_describe(e)}",
            definitive=isinstance(e, aiohttp.ClientConnectorCertificateError),
        ) from None
    try:
        await ws.send_bytes(pack(open_frame))
        msg = await ws.receive(timeout=timeout)
        if msg.type != WSMsgType.BINARY:
            raise StreamError(f"stream to {addr} ended before the peer accepted it")
        frame = unpack(msg.data)
        if frame["Type"] == ERROR:
            code, message = str(frame.get("Code", "")), str(frame.get("Message", ""))
            if code in (FAILED_PRECONDITION, UNAVAILABLE):
                raise Moved(message, str(frame.get("LeaderAddress") or ""))
            if code == ABORTED:
                raise PeerTerminated()
            raise Rejected(code, message)
        if frame["Type"] == TERMINATED_FRAME:
            raise PeerTerminated()
        if frame["Type"] != HEARTBEAT:
            raise StreamError(f"unexpected first frame {frame['Type']!r} from {addr}")
        return ws
    except TimeoutError:
        await ws.close()
        raise StreamError(f"no answer to Open from {addr}") from None
    except BaseException:
        await ws.close()
        raise
