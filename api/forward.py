"""Where a request is forwarded: to the leader's HTTP address, learned from replicated membership.

The pipeline (api/pipeline.py) calls `to_leader` for LEADER routes (whose serve needs the
leader's own memory or disk; ordinary writes are served where they arrive and reach the leader as
Raft commands) and for `?consistent` reads with `--consistent-reads barrier` (other reads are
served where they arrive, api/reads.py), before anything of the request is decoded;
the raw body and the caller's headers go to the leader, which runs the pipeline once. A node that
receives a forwarded request but is not leader (any more) answers 503 with a marker header, so
the original node keeps trying until its hold time ends, as Consul's RPC layer does. Leaderless
periods end in 503 `No cluster leader`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import web

from cluster import logs

from .context import SERVER, ServerContext
from .errors import APIError, no_leader
from .https import log_https_refused, server_base

FORWARDED = "X-Peerplane-Forwarded"
NOT_LEADER = "X-Peerplane-Not-Leader"
_PASS_REQUEST = ("Content-Type", "X-Consul-Token", "Authorization", "X-Consul-Partition")
_SKIP_RESPONSE = {"content-length", "transfer-encoding", "connection", "date", "server"}
_POLL = 0.02


class _LeaderMoved(Exception):
    pass


FORWARDED_TO = "forwarded_to"  # request key: the leader that answered instead (for the log)


async def to_leader(
    request: web.Request, *, need_lease: bool = False, extra_time: float = 0.0
) -> web.StreamResponse | None:
    """None when this node is the leader and may serve the request itself (with a valid lease
    when `need_lease`); otherwise the leader's response, or APIError 503 after the hold time."""
    ctx = request.app[SERVER]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.hold_timeout
    while True:
        if ctx.node.is_leader():
            if not need_lease or ctx.node.lease_holds():
                return None
        elif request.headers.get(FORWARDED):
            # Never forward twice: the sender holds the clock and will retry.
            raise APIError(503, "No cluster leader", {NOT_LEADER: "1"})
        else:
            leader = ctx.node.leader()
            if ctx.node.cut_off():
                raise no_leader()  # Consul's text, now rather than after the hold time
            target = _leader_http(ctx, leader)
            if target is not None:
                try:
                    response = await _proxy(request, ctx, target, leader, extra_time)
                except _LeaderMoved:
                    pass
                else:
                    request[FORWARDED_TO] = leader
                    return response
        if loop.time() >= deadline:
            raise no_leader()
        await asyncio.sleep(_POLL)


def _still_invalid(value: str) -> str:
    """A header value as the leader must see it. Bytes that are not UTF-8 arrive here as
    surrogates, which aiohttp's client would silently drop - turning `X-Consul-Partition: \\xff`
    into no partition at all, a 200 where the leader answers 400. U+FFFD keeps them invalid."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _leader_http(ctx: ServerContext, leader: str | None) -> tuple[str, dict[str, Any]] | None:
    if leader is None or leader == ctx.raft_addr:
        return None
    return server_base(ctx, ctx.fsm.servers_view().get(leader, {}))  # HTTPS when it is on


async def _proxy(
    request: web.Request, ctx: ServerContext, target: tuple[str, dict[str, Any]],
    leader: str | None, extra_time: float,
) -> web.Response:
    """Send to the leader, but stop waiting as soon as this node sees leadership move (or is
    cut off itself): a request parked at a cut-off or paused old leader would otherwise hold
    the client for the whole proxy timeout although a new leader is already there. Reads are
    then retried at the new leader; a write's outcome is unknown (503), as with any lost
    connection."""
    task = asyncio.ensure_future(_send(request, ctx, target, extra_time))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_POLL * 2.5)
            if done:
                return task.result()
            if ctx.node.leader() != leader or not ctx.node.in_touch(leader):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                if request.method in ("GET", "HEAD"):
                    raise _LeaderMoved
                raise APIError(
                    503, "Request outcome unknown: leadership changed while the leader had the "
                    "request; read before retrying"
                )
    finally:
        if not task.done():
            task.cancel()


async def _send(
    request: web.Request, ctx: ServerContext, target: tuple[str, dict[str, Any]],
    extra_time: float,
) -> web.Response:
    assert ctx.session is not None
    headers = {k: _still_invalid(request.headers[k]) for k in _PASS_REQUEST
               if k in request.headers}
    headers[FORWARDED] = ctx.node_name
    if (rid := logs.REQUEST_ID.get()) is not None:
        headers["X-Request-Id"] = rid  # the leader logs the request under the same ID
    body = await request.read()
    timeout = aiohttp.ClientTimeout(total=ctx.hold_timeout + ctx.apply_timeout + extra_time + 5)
    idempotent = request.method in ("GET", "HEAD")
    try:
        async with ctx.session.request(
            request.method, f"{target[0]}{request.rel_url}", data=body or None,
            headers=headers, timeout=timeout, allow_redirects=False, **target[1],
        ) as resp:
            payload = await resp.read()
            if ctx.metrics is not None:
                ctx.metrics.observe_forward(request.method, resp.status)
            if resp.status == 503 and resp.headers.get(NOT_LEADER):
                raise _LeaderMoved
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _SKIP_RESPONSE}
            return web.Response(status=resp.status, body=payload, headers=out)
    except aiohttp.ClientConnectorError as e:
        if ctx.metrics is not None:
            ctx.metrics.observe_forward(request.method, "error")
        if isinstance(e, aiohttp.ClientConnectorCertificateError):  # say why, or it looks
            log_https_refused(target[0], e)                        # like "No cluster leader"
        raise _LeaderMoved from None  # never reached the leader: safe to retry
    except (aiohttp.ClientError, TimeoutError):
        if ctx.metrics is not None:
            ctx.metrics.observe_forward(request.method, "error")
        if idempotent:
            raise _LeaderMoved from None
        raise APIError(
            503, "Request outcome unknown: lost the connection to the leader; retry the request"
        ) from None
