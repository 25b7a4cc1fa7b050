"""Where a read mode is decided: default (leader with a lease), ?consistent (quorum barrier after
the request arrived), ?stale (local state, bounded by ?max_stale), and blocking ?index/&wait."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from cluster.raft import NotApplied, UnknownOutcome

from .context import SERVER
from .errors import APIError, bad_request
from .forward import route_to_leader

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds from Go's time.ParseDuration syntax ("1m30s", "250ms", "0")."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(text)
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION.match(body, pos)
        if not m:
            raise ValueError(text)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


@dataclass(frozen=True)
class ReadOptions:
    mode: str  # "leader" | "consistent" | "stale"
    max_stale: float | None = None
    index: int | None = None
    wait: float = DEFAULT_WAIT


def parse_read_options(query: MultiMapping[str]) -> ReadOptions:
    stale = "stale" in query
    consistent = "consistent" in query
    max_stale = None
    if "max_stale" in query:
        try:
            max_stale = go_duration(query["max_stale"])
        except ValueError:
            raise bad_request(f'Invalid max_stale value "{query["max_stale"]}"') from None
        if max_stale > 0:
            stale = True
    if "leader" in query:
        stale = False
    if stale and consistent:
        raise bad_request("Cannot specify ?stale with ?consistent, conflicting semantics.")
    index = None
    if "index" in query:
        try:
            index = int(query["index"])
            if index < 0:
                raise ValueError
        except ValueError:
            raise bad_request("Invalid index") from None
    wait = DEFAULT_WAIT
    if "wait" in query:
        try:
            wait = go_duration(query["wait"])
            if wait < 0:
                raise ValueError
        except ValueError:
            raise bad_request("Invalid wait time") from None
        wait = min(wait, MAX_WAIT)
    mode = "stale" if stale else "consistent" if consistent else "leader"
    return ReadOptions(mode=mode, max_stale=max_stale if stale else None, index=index, wait=wait)


async def route_read(request: web.Request, opts: ReadOptions) -> web.StreamResponse | None:
    """Send the read where its mode says; None means serve it here from the local FSM."""
    ctx = request.app[SERVER]
    extra = opts.wait * 1.07 if opts.index is not None else 0.0
    if opts.mode == "stale":
        if opts.max_stale is None or ctx.node.last_contact_ms() <= opts.max_stale * 1000:
            return None
        # Too far behind: the leader answers instead (or 503 when there is none).
        return await route_to_leader(request, extra_time=extra)
    forwarded = await route_to_leader(request, need_lease=opts.mode == "leader", extra_time=extra)
    if forwarded is not None:
        return forwarded
    if opts.mode == "consistent":
        confirm = ctx.node.read_index if ctx.consistent_reads == "readindex" else ctx.node.barrier
        try:
            await confirm(ctx.hold_timeout)
        except (NotApplied, UnknownOutcome):
            raise APIError(503, "Not ready to serve consistent reads") from None
    return None


def read_headers(request: web.Request, opts: ReadOptions, index: int | None) -> dict[str, str]:
    node = request.app[SERVER].node
    headers = {
        "X-Consul-KnownLeader": "true" if node.leader() is not None else "false",
        "X-Consul-LastContact": str(node.last_contact_ms()),
        "X-Consul-Effective-Consistency": opts.mode,
        "X-Consul-Query-Backend": "blocking-query",
    }
    if index is not None:
        headers["X-Consul-Index"] = str(max(1, index))
    return headers
