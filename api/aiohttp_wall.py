"""Every use of aiohttp's internals, in one module, checked when a server starts.

aiohttp (pinned 3.14.5) answers a request its HTTP parser refuses (request line or a header line
too long, too many headers, malformed) from `RequestHandler.handle_error`, before any app code
runs, with its own text and a logged traceback; it has no public setting for that answer. To
answer with our texts instead (api/limits.py) we need three internals:

- `aiohttp.web_protocol.RequestHandler.handle_error(request, status, exc, message)`: overridden;
- `web.Server.__call__` builds the connection's RequestHandler from the private `_loop` and
  `_kwargs`: our server class builds our handler from the same;
- `web.AppRunner._make_server()` returns that `web.Server`: the runner gives it our class.

`check()` runs before the runner builds a server; if aiohttp no longer has one of these it
raises AiohttpIncompatible naming it - never a silent fallback to aiohttp's own answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestHandler

PINNED = "3.14.5"
_HANDLE_ERROR_PARAMS = ["self", "request", "status", "exc", "message"]
_SERVER_FIELDS = ("_loop", "_kwargs")

ParserAnswer = Callable[[BadHttpMessage], web.Response | None]


class AiohttpIncompatible(RuntimeError):
    pass


def missing_internals(server: web.Server | None = None) -> list[str]:
    """What this module needs and the installed aiohttp lacks (empty when all is there)."""
    missing = []
    handle_error = getattr(RequestHandler, "handle_error", None)
    if handle_error is None or list(inspect.signature(handle_error).parameters) != \
            _HANDLE_ERROR_PARAMS:
        missing.append("RequestHandler.handle_error(request, status, exc, message)")
    if not callable(getattr(web.AppRunner, "_make_server", None)):
        missing.append("web.AppRunner._make_server")
    if server is not None:
        if type(server) is not web.Server:
            missing.append(f"web.AppRunner._make_server returning web.Server "
                           f"(got {type(server).__name__})")
        missing += [f"web.Server.{f}" for f in _SERVER_FIELDS if not hasattr(server, f)]
    return missing


def check(server: web.Server | None = None) -> None:
    missing = missing_internals(server)
    if missing:
        raise AiohttpIncompatible(
            f"aiohttp lacks what api/aiohttp_wall.py relies on: {', '.join(missing)} "
            f"(written against aiohttp {PINNED}); refusing to start"
        )


class _Handler(RequestHandler):
    parser_answer: ParserAnswer

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400 and isinstance(exc, BadHttpMessage):
            response = self.parser_answer(exc)
            if response is not None:
                response.force_close()  # as aiohttp's own error answers: close the connection
                return response
        return super().handle_error(request, status, exc, message)


class _Server(web.Server):
    parser_answer: ParserAnswer

    def __call__(self) -> RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.parser_answer = self.parser_answer
        return handler


class ParserAnswerRunner(web.AppRunner):
    """web.AppRunner whose connections answer what the HTTP parser refuses with
    `parser_answer(exc)` (None: aiohttp's own answer)."""

    def __init__(self, app: web.Application, parser_answer: ParserAnswer, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._parser_answer = parser_answer

    async def _make_server(self) -> web.Server:
        check()
        server = await super()._make_server()
        check(server)
        server.__class__ = _Server  # same state; only the connection class differs
        server.parser_answer = self._parser_answer  # type: ignore[attr-defined]
        return server
