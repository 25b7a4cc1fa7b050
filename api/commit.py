"""Where the API commits a command: cluster/proposer.py's outcomes mapped to HTTP answers.

A write is committed by the server that got it, leader or follower: a follower's command goes
to the leader over the Raft link and the result is the one its own FSM computed when it applied
the entry (cluster/raft_wall/syncobj.py). While no leader is known the commit is retried until
the hold time ends (503 `No cluster leader`), at once when this server is cut off.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from cluster.commands import Command
from cluster.proposer import KeptChanging, NotApplied, Proposer, Refused, UnknownOutcome
from cluster.raft import DiskFault

from .context import ServerContext
from .errors import APIError, bad_request, disk_unavailable, no_leader

_POLL = 0.02


@dataclasses.dataclass
class WriteScope:
    """What the commits of one write request share (the pipeline sets it, api/pipeline.py)."""

    acl_index: int | None = None  # the ACL revision its ACL decision was made on
    settled: bool = False  # a command of it reached the FSM (applied or refused there)


SCOPE: ContextVar[WriteScope | None] = ContextVar("peerplane_write_scope", default=None)


class ACLChanged(Exception):
    """The ACL table changed between the request's ACL decision and its command's apply:
    nothing changed; decide again (the pipeline does)."""


async def commit(
    ctx: ServerContext, build: Callable[[], Command], what: str = "peering"
) -> dict[str, Any]:
    """Propose a command built from current state (rebuilt and retried when that state moved
    before it applied). `what` names the record in the 503 texts."""
    proposer = ctx.proposer or Proposer(ctx.node, ctx.apply_timeout)
    scope = SCOPE.get()
    # Only the first command of a request depends on its ACL decision; later ones (e.g. the
    # secret of an establish) continue a write that was already allowed and applied.
    acl_index = scope.acl_index if scope is not None and not scope.settled else None

    def built() -> Command:
        cmd = build()
        return cmd if acl_index is None else dataclasses.replace(cmd, acl_index=acl_index)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.hold_timeout
    while True:
        node = ctx.node
        if node.cut_off():
            raise no_leader()
        try:
            res = await proposer.commit(built)
        except DiskFault as e:
            raise disk_unavailable(str(e)) from None
        except NotApplied:
            # No leader known, or it was unreachable or had stepped down: certainly not
            # applied, so wait for one as Consul's RPC layer does.
            if loop.time() >= deadline:
                raise no_leader() from None
            await asyncio.sleep(_POLL)
            continue
        except UnknownOutcome:
            raise APIError(
                503, "Request outcome unknown: leadership changed or the write timed out; "
                f"read the {what} before retrying"
            ) from None
        except KeptChanging:
            raise APIError(
                503, f"The {what} kept changing concurrently; retry the request") from None
        except Refused as e:
            if e.kind == "acl_changed":
                raise ACLChanged() from None
            if scope is not None:
                scope.settled = True
            if e.kind == "bootstrap":
                raise APIError(403, f"Permission denied: {e}") from None
            raise bad_request(str(e)) from None
        if scope is not None:
            scope.settled = True
        return res


async def catch_up(ctx: ServerContext) -> bool:
    """On a follower: apply here everything the cluster committed before this call (the
    leader's read index, as a follower read gets it: no log entry); False when that cannot be
    done now. A follower confirms a refusal it decided from its own state this way: its state
    may lack a write another server just acknowledged."""
    node = ctx.node
    if node.is_leader() or node.cut_off():
        return False
    try:
        await node.follower_read_index(True, ctx.apply_timeout)
    except (NotApplied, UnknownOutcome):
        return False
    return True
