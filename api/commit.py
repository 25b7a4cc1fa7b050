"""Where the API submits a command: compare-and-set retries, and Raft outcomes mapped to HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.raft import DiskFault, NotApplied, UnknownOutcome

from .context import ServerContext
from .errors import APIError, bad_request, disk_unavailable, no_leader

CAS_RETRIES = 5


async def commit(
    ctx: ServerContext, build: Callable[[], dict[str, Any]], what: str = "peering"
) -> dict[str, Any]:
    """Submit a command built from current state; rebuild and retry when the state moved
    between building and applying (the compare-and-set precondition failed). `what` names the
    record in the 503 texts."""
    for _ in range(CAS_RETRIES):
        cmd = build()
        try:
            res = await ctx.node.submit(cmd, ctx.apply_timeout)
        except DiskFault as e:
            raise disk_unavailable(str(e)) from None
        except NotApplied:
            raise no_leader() from None
        except UnknownOutcome:
            raise APIError(
                503, "Request outcome unknown: leadership changed or the write timed out; "
                f"read the {what} before retrying"
            ) from None
        error = res.get("error")
        if error is None:
            return res
        if res.get("kind") == "conflict" and "changed since" in error:
            continue
        if res.get("kind") == "bootstrap":
            raise APIError(403, f"Permission denied: {error}")
        raise bad_request(error)
    raise APIError(503, f"The {what} kept changing concurrently; retry the request")
