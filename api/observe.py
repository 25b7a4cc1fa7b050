"""Observability of the front end: what the front middleware (api/app.py) does first and last for
every request (request ID, metrics, request log line), and `GET /v1/agent/metrics` (Consul's
JSON, or Prometheus text with `?format=prometheus`)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from cluster import logs
from cluster.metrics import Metrics

from .authz import AGENT_READ
from .context import SERVER
from .forward import FORWARDED_TO
from .pipeline import LOCAL, Route
from .render import json_response

log = logging.getLogger("peerplane.http")

REQUEST_ID = "X-Request-Id"


def route_of(request: web.Request) -> str:
    """The matched route's pattern (`/v1/peering/{name}`), never the raw path: bounded labels."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


class Observed:
    """One request as the front middleware (api/app.py) sees it, outermost: its request ID
    (set for everything logged while serving it), its final status whatever answered it, and
    at the end its metrics and its request log line."""

    __slots__ = ("request", "metrics", "rid", "token", "started", "status")

    def __init__(self, request: web.Request, metrics: Metrics | None) -> None:
        self.request = request
        self.metrics = metrics
        self.rid = logs.request_id(request.headers.get(REQUEST_ID))
        self.token = logs.REQUEST_ID.set(self.rid)
        self.started = time.perf_counter()
        self.status = 500

    def answered(self, response: web.StreamResponse) -> web.StreamResponse:
        self.status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID] = self.rid
        return response

    def raised(self, e: web.HTTPException) -> None:
        self.status = e.status
        e.headers[REQUEST_ID] = self.rid

    def cancelled(self) -> None:
        self.status = 499  # the client went away before the answer

    def finish(self) -> None:
        request, status = self.request, self.status
        elapsed = time.perf_counter() - self.started
        route = route_of(request)
        if self.metrics is not None:
            self.metrics.observe_http(route, request.method, status, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            # Consul's "Request finished" line, at debug level as in Consul; a request this
            # server forwarded names the leader that answered it.
            extra = {"method": request.method, "route": route, "status": status,
                     "latency_ms": round(elapsed * 1000, 3)}
            if (leader := request.get(FORWARDED_TO)) is not None:
                extra["forwarded_to"] = leader
            log.debug(
                "Request finished: method=%s url=%s from=%s status=%d latency=%.3fms",
                request.method, logs.redact_url(request.path_qs), request.remote, status,
                elapsed * 1000, extra=extra,
            )
        logs.REQUEST_ID.reset(self.token)


async def agent_metrics(request: web.Request, _: None) -> web.StreamResponse:
    metrics = request.app[SERVER].metrics
    if metrics is None:
        return web.Response(status=503, text="metrics are not enabled on this server")
    accept = request.headers.get("Accept", "")
    if request.query.get("format") == "prometheus" or "application/openmetrics-text" in accept:
        body, content_type = metrics.prometheus(accept)
        return web.Response(body=body, headers={"Content-Type": content_type})
    return json_response(request, metrics.json())


ROUTES = [
    Route("GET", "/v1/agent/metrics", LOCAL, AGENT_READ, agent_metrics, allow_head=True,
          without_journal=True),
]
