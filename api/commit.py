"""Where the API commits a command: cluster/proposer.py's outcomes mapped to HTTP answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.commands import Command
from cluster.proposer import KeptChanging, NotApplied, Proposer, Refused, UnknownOutcome
from cluster.raft import DiskFault

from .context import ServerContext
from .errors import APIError, bad_request, disk_unavailable, no_leader


async def commit(
    ctx: ServerContext, build: Callable[[], Command], what: str = "peering"
) -> dict[str, Any]:
    """Propose a command built from current state (rebuilt and retried when that state moved
    before it applied). `what` names the record in the 503 texts."""
    proposer = ctx.proposer or Proposer(ctx.node, ctx.apply_timeout)
    try:
        return await proposer.commit(build)
    except DiskFault as e:
        raise disk_unavailable(str(e)) from None
    except NotApplied:
        raise no_leader() from None
    except UnknownOutcome:
        raise APIError(
            503, "Request outcome unknown: leadership changed or the write timed out; "
            f"read the {what} before retrying"
        ) from None
    except KeptChanging:
        raise APIError(503, f"The {what} kept changing concurrently; retry the request") from None
    except Refused as e:
        if e.kind == "bootstrap":
            raise APIError(403, f"Permission denied: {e}") from None
        raise bad_request(str(e)) from None
