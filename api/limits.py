"""Limits on what one HTTP client can make a server hold: header and URL sizes, how long a
request may take to arrive, and how many blocking queries may wait at once.

- **Request line** (method, URL, version) over `max_line_size` bytes: `414` `URI too long
  (limit: N bytes)`. **A header line** over `max_field_size` bytes, or more than `max_headers`
  header lines: `431` `Request header fields too large (limit: ...)`. Other malformed HTTP: `400`
  `Bad request: <reason>`. The parser answers these itself (the app never sees the request), so
  the answer comes through api/aiohttp_wall.py (aiohttp has no public hook for it); every one
  closes the connection.
- **Slow clients**: a connection that has not delivered a complete request head within
  `read_timeout` seconds of connecting (or of its previous answer) is closed - aiohttp's
  keep-alive timer, which also runs while a head is arriving byte by byte. A request body that
  has not fully arrived within `read_timeout` seconds is answered `408` `Timed out reading the
  request body (limit: N s)` and the connection is closed (after at most as long again
  draining what is left of the body, aiohttp's lingering close).
- **Blocking queries** (`GET ...?index=`): at most `max_blocking_queries` wait on one server at a
  time, forwarded ones included; beyond that `429` `Too many concurrent blocking queries
  (limit: N); retry later`. Non-blocking requests are never refused.

Body size (`413`) is `ServerContext.max_body` (the app's `client_max_size`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from .aiohttp_wall import ParserAnswerRunner

log = logging.getLogger("peerplane.http")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class HTTPLimits:
    read_timeout: float = 30.0  # request head (and idle keep-alive), and request body, seconds
    max_line_size: int = 16384  # the request line: method, URL with query, version
    max_field_size: int = 8192  # one header line
    max_headers: int = 128  # header lines
    max_blocking_queries: int = 256  # per server, forwarded ones included

    def __post_init__(self) -> None:
        # An over-long line is told apart (414 or 431) by the limit it broke.
        if self.max_line_size == self.max_field_size:
            raise ValueError("max_line_size and max_field_size must differ")

    def runner_kwargs(self) -> dict[str, Any]:
        """aiohttp server settings (web.AppRunner keyword arguments, passed to each connection)."""
        return {
            "keepalive_timeout": self.read_timeout,
            # after an answer, what is left of an unread body is drained this long at most
            "lingering_time": self.read_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }

    def client_connector(self) -> aiohttp.TCPConnector:
        """For forwarding to the leader: idle connections are dropped before the leader's
        keep-alive timer would close them under a request, and blocking queries forwarded up to
        the cap still leave connections for everything else."""
        return aiohttp.TCPConnector(
            limit=self.max_blocking_queries + 64,
            keepalive_timeout=min(15.0, self.read_timeout / 2),
        )


LIMITS = web.AppKey("limits", HTTPLimits)
_BLOCKING = web.AppKey("blocking_queries", list)  # [count] of blocking queries in progress


def install(app: web.Application, limits: HTTPLimits) -> None:
    app[LIMITS] = limits
    app[_BLOCKING] = [0]


def too_many_blocking(limit: int) -> str:
    return f"Too many concurrent blocking queries (limit: {limit}); retry later"


def body_timeout_text(timeout: float) -> str:
    return f"Timed out reading the request body (limit: {timeout:g} s)"


async def read_body_in_time(request: web.Request) -> web.Response | None:
    """Read (and cache) the whole body before the handler runs, within the read timeout: None,
    or the 408 answer. Too large a body raises HTTPRequestEntityTooLarge here, which becomes
    the 413."""
    if request.method not in _BODY_METHODS or not request.can_read_body:
        return None
    if request.content.is_eof():  # all of it arrived with the headers: nothing to wait for
        await request.read()
        return None
    timeout = request.app[LIMITS].read_timeout
    try:
        async with asyncio.timeout(timeout):  # no task per body, unlike wait_for
            await request.read()
    except TimeoutError:
        response = web.Response(status=408, text=body_timeout_text(timeout))
        response.force_close()
        return response
    return None


def is_blocking(request: web.Request) -> bool:
    return request.method == "GET" and "index" in request.query


async def capped(
    request: web.Request, serve: Coroutine[Any, Any, web.StreamResponse]
) -> web.StreamResponse:
    """Run `serve` (a blocking query) if fewer than the cap wait on this server, else 429."""
    limit = request.app[LIMITS].max_blocking_queries
    active = request.app[_BLOCKING]
    if active[0] >= limit:
        serve.close()  # never started
        return web.Response(status=429, text=too_many_blocking(limit))
    active[0] += 1
    try:
        return await serve
    finally:
        active[0] -= 1


# ---- malformed or oversized HTTP, answered by the parser's error path (api/aiohttp_wall.py) ----


def parser_answer(limits: HTTPLimits, exc: BadHttpMessage) -> web.Response:
    """Our answer to a request aiohttp's parser refused (aiohttp's own quotes the offending
    bytes and logs a traceback each time)."""
    if isinstance(exc, LineTooLong) and exc.args[1:2] == (limits.max_line_size,):
        status, text = 414, f"URI too long (limit: {limits.max_line_size} bytes)"
    elif isinstance(exc, LineTooLong):
        status, text = 431, (
            f"Request header fields too large (limit: {limits.max_field_size} bytes "
            "per header line)"
        )
    elif "Too many headers" in exc.message:
        status, text = 431, (
            f"Request header fields too large (limit: {limits.max_headers} header lines)"
        )
    else:
        reason = (exc.message or "malformed request").strip().splitlines()[0].rstrip(":")
        status, text = 400, f"Bad request: {reason}"
    log.debug("refused a malformed request: %s", text)
    return web.Response(status=status, text=text, content_type="text/plain")


class HardenedAppRunner(ParserAnswerRunner):
    """web.AppRunner with these limits, whose connections answer malformed and oversized
    requests with the texts above."""

    def __init__(self, app: web.Application, limits: HTTPLimits, **kwargs: Any) -> None:
        super().__init__(app, functools.partial(parser_answer, limits),
                         **limits.runner_kwargs(), **kwargs)
