"""Where a read mode is decided: default (Consul's "leader" mode: the leader's lease),
?consistent (a quorum round after the request arrived), ?stale (local state, bounded by
?max_stale), and blocking ?index/&wait.

Every server serves reads from its own FSM. The leader confirms them itself (lease, or its
batched ReadIndex round); a follower first asks the leader for a read index over the Raft link
(etcd's follower ReadIndex, cluster/raft.py `follower_read_index`: the leader answers under its
lease for default reads, after a quorum round for ?consistent), waits until it has applied
that index, and then serves. So a follower never answers from state older than the leader's
commit index when the read arrived, and only the read index crosses to the leader - never the
HTTP request. Without a leader: 503 `No cluster leader` (at once when cut off, `in_touch`; else
after the hold time), or `Not ready to serve consistent reads` when the leader does not confirm
a ?consistent read in time. `--consistent-reads barrier` keeps the older way for ?consistent:
forwarded to the leader, which commits a no-op.

The pipeline (api/pipeline.py) calls `decide` for every read route, from the query string only
(before any other input is parsed); handlers get the options back through `options(request)`.
Reads with ?index get the read index first and then block here (pipeline)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from cluster.raft import NotApplied, UnknownOutcome

from .context import SERVER, ServerContext
from .errors import APIError, bad_request, no_leader
from .forward import to_leader

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0

_UNITS_NS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
             "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_MAX_NS = (1 << 63) - 1
_DIGITS = "0123456789"
_INDEX = re.compile(r"[0-9]+")
_MAX_INDEX = (1 << 64) - 1


def go_duration(text: str) -> float:
    """Seconds from Go's time.ParseDuration syntax ("1m30s", "250ms", ".5h", "-1.5s", "0").

    A port of Go's parser (integer nanoseconds, ASCII digits only, the same overflow limit of
    about 292 years); every failure is a ValueError."""
    s, neg = text, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(text)
    total = 0
    while s:
        if s[0] != "." and s[0] not in _DIGITS:
            raise ValueError(text)
        i = 0
        while i < len(s) and s[i] in _DIGITS:
            i += 1
        pre, digits, s = i > 0, s[:i].lstrip("0") or "0", s[i:]
        if len(digits) > 19 or int(digits) > 1 << 63:
            raise ValueError(text)
        whole = int(digits)
        frac, scale, post = 0, 1, False
        if s[:1] == ".":
            i = 1
            while i < len(s) and s[i] in _DIGITS:
                if scale < 10**18:  # Go stops adding digits that would overflow
                    frac, scale = frac * 10 + int(s[i]), scale * 10
                i += 1
            post, s = i > 1, s[i:]
        if not pre and not post:
            raise ValueError(text)
        i = 0
        while i < len(s) and s[i] != "." and s[i] not in _DIGITS:
            i += 1
        unit = _UNITS_NS.get(s[:i]) if i else None
        if unit is None:
            raise ValueError(text)
        s = s[i:]
        if whole > (1 << 63) // unit:
            raise ValueError(text)
        value = whole * unit + int(frac * (unit / scale))
        total += value
        if value > 1 << 63 or total > 1 << 63:
            raise ValueError(text)
    if not neg and total > _MAX_NS:
        raise ValueError(text)
    return (-total if neg else total) / 1e9


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
        # Go's strconv.ParseUint(s, 10, 64): ASCII digits only, no sign, spaces or underscores
        text = query["index"]
        digits = (text.lstrip("0") or "0") if _INDEX.fullmatch(text) else ""
        if not digits or len(digits) > 20 or int(digits) > _MAX_INDEX:
            raise bad_request("Invalid index")
        index = int(digits)
    wait = DEFAULT_WAIT
    if "wait" in query:
        try:
            wait = go_duration(query["wait"])
            if query["wait"].startswith("-"):
                raise ValueError
        except ValueError:
            raise bad_request("Invalid wait time") from None
        wait = min(wait, MAX_WAIT)
    mode = "stale" if stale else "consistent" if consistent else "leader"
    return ReadOptions(mode=mode, max_stale=max_stale if stale else None, index=index, wait=wait)


READ = "read_options"  # request key: the ReadOptions `decide` served the request with


async def decide(request: web.Request) -> web.StreamResponse | None:
    """Parse the read options and make sure this server may serve the read from its own FSM
    (None), or answer for it (the leader's response, with `--consistent-reads barrier`)."""
    ctx = request.app[SERVER]
    opts = request[READ] = parse_read_options(request.query)
    if opts.mode == "stale":
        if opts.max_stale is None or ctx.node.last_contact_ms() <= opts.max_stale * 1000:
            return None  # a stale read is served from this server's state
        # Too far behind: catch up to the leader's lease read index first (503 without one).
        await _confirm(ctx, "leader")
        return None
    if opts.mode == "consistent" and ctx.consistent_reads == "barrier" \
            and ctx.proposer is not None:
        # Reads through the log: the leader commits a no-op for them (bench/read_modes.py).
        extra = opts.wait * 1.07 if opts.index is not None else 0.0
        forwarded = await to_leader(request, extra_time=extra)
        if forwarded is not None:
            return forwarded
        try:
            await ctx.proposer.barrier(ctx.hold_timeout)
        except (NotApplied, UnknownOutcome):
            raise APIError(503, NOT_READY) from None
        return None
    await _confirm(ctx, opts.mode)
    return None


NOT_READY = "Not ready to serve consistent reads"
_POLL = 0.02


async def _confirm(ctx: ServerContext, mode: str) -> None:
    """Return once this server's FSM holds every write acknowledged before now: on the leader,
    its lease (default mode) or a quorum round (?consistent); on a follower, the leader's read
    index for this read, applied here. Waits up to the hold time for a leader; 503 after it,
    at once when cut off from the leader and a quorum (`in_touch`)."""
    node = ctx.node
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.hold_timeout
    asked = False
    while True:
        if node.is_leader():
            if mode == "consistent":
                try:
                    await node.read_index(ctx.hold_timeout)
                except (NotApplied, UnknownOutcome):
                    raise APIError(503, NOT_READY) from None
                return
            if node.lease_holds():
                return
        else:
            leader = node.leader()
            if node.cut_off():
                raise no_leader()  # Consul's text, now rather than after the hold time
            if leader is not None:
                asked = True
                try:
                    await node.follower_read_index(mode != "consistent", deadline - loop.time())
                    return
                except NotApplied:
                    pass  # it refused (no longer leads) or did not answer: retry
                except UnknownOutcome:
                    # The leader did not confirm in time: for ?consistent the text a leader
                    # gives when its own quorum round does not complete.
                    if mode == "consistent":
                        raise APIError(503, NOT_READY) from None
                    raise no_leader() from None
        if loop.time() >= deadline:
            # A leader was there to ask but never confirmed a ?consistent read: as a leader
            # whose quorum round does not complete answers.
            if mode == "consistent" and asked:
                raise APIError(503, NOT_READY)
            raise no_leader()
        await asyncio.sleep(_POLL)


def options(request: web.Request) -> ReadOptions:
    return request[READ]


def read_headers(request: web.Request, index: int | None) -> dict[str, str]:
    node = request.app[SERVER].node
    opts = options(request)
    headers = {
        "X-Consul-KnownLeader": "true" if node.leader() is not None else "false",
        # A default or ?consistent read was confirmed current by the leader during this request
        # (its lease or a quorum round, directly or through the read index a follower asked
        # for): 0, as Consul reports for the leader-served reads these are. ?stale: how long
        # since this server last heard from a leader.
        "X-Consul-LastContact": str(node.last_contact_ms()) if opts.mode == "stale" else "0",
        "X-Consul-Effective-Consistency": opts.mode,
        "X-Consul-Query-Backend": "blocking-query",
    }
    if index is not None:
        headers["X-Consul-Index"] = str(max(1, index))
    return headers
