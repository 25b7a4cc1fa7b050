"""The one way to propose a command: submit it through Raft and sort the outcome.

Every writer uses a `Proposer`: the HTTP handlers (through api/commit.py, which maps these
exceptions to HTTP answers), the leader routines, the peering reconciler, the agent's
self-registration. The outcomes:
- the FSM's result (a dict) when the command was applied;
- `Refused(message, kind)` when the FSM refused it (nothing changed);
- `NotApplied` (certainly not applied: safe to retry) or `UnknownOutcome` (it may still
  commit) from the Raft node;
- `KeptChanging` when a compare-and-set command lost to concurrent writes `CAS_RETRIES` times.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .commands import Barrier, Command
from .raft import NotApplied, RaftNode, UnknownOutcome

__all__ = ["CAS_RETRIES", "KeptChanging", "NotApplied", "Proposer", "Refused", "UnknownOutcome"]

log = logging.getLogger("peerplane.proposer")

CAS_RETRIES = 5


class Refused(Exception):
    """The FSM refused the command; nothing changed. `kind`: invalid, conflict, not_found,
    permission, bootstrap, acl_changed (its `acl_index` is older than the ACL table)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class KeptChanging(Exception):
    """The record changed between building and applying, every time we tried."""


def _is_cas_conflict(res: dict[str, Any]) -> bool:
    return res.get("kind") == "conflict" and "changed since" in str(res.get("error"))


class Proposer:
    def __init__(self, node: RaftNode, timeout: float = 5.0) -> None:
        self.node = node
        self.timeout = timeout
        self._barrier: asyncio.Future[int] | None = None
        self._next_barrier: asyncio.Future[int] | None = None

    async def submit(self, cmd: Command) -> dict[str, Any]:
        """The FSM's result as it is, a refusal included (callers that branch on the kind of
        refusal); raises NotApplied / UnknownOutcome."""
        return await self.node.submit(cmd, self.timeout)

    async def apply(self, cmd: Command) -> dict[str, Any]:
        """The FSM's result, or Refused."""
        res = await self.submit(cmd)
        if "error" in res:
            raise Refused(res["error"], res.get("kind", "invalid"))
        return res

    async def commit(self, build: Callable[[], Command]) -> dict[str, Any]:
        """A command built from current state (with its compare-and-set precondition); rebuilt
        and retried when the state moved between building and applying."""
        for _ in range(CAS_RETRIES):
            res = await self.submit(build())
            if "error" not in res:
                return res
            if not _is_cas_conflict(res):
                raise Refused(res["error"], res.get("kind", "invalid"))
        raise KeptChanging()

    async def barrier(self, timeout: float) -> int:
        """Commit a no-op through the log; when it is applied here, every write acknowledged
        before this call is visible locally. Calls arriving while a barrier is in flight share
        the next one (it starts after they arrived, so it proves leadership for them too)."""
        if self._barrier is None:
            self._barrier = asyncio.ensure_future(self._run_barrier(timeout))
            fut = self._barrier
        else:
            if self._next_barrier is None:
                self._next_barrier = asyncio.ensure_future(self._chain_barrier(timeout))
            fut = self._next_barrier
        return await asyncio.shield(fut)

    async def _run_barrier(self, timeout: float) -> int:
        try:
            res = await self.node.submit(Barrier(), timeout)
            return int(res["index"])
        finally:
            self._barrier = None

    async def _chain_barrier(self, timeout: float) -> int:
        current = self._barrier
        if current is not None:
            await asyncio.wait([current])
        self._barrier, self._next_barrier = self._next_barrier, None
        try:
            res = await self.node.submit(Barrier(), timeout)
            return int(res["index"])
        finally:
            self._barrier = None

    async def attempt(self, cmd: Command) -> dict[str, Any] | None:
        """For routines that retry on their own: the FSM's result (a refusal included, and
        logged), or None when Raft did not take it (logged)."""
        try:
            res = await self.submit(cmd)
        except (NotApplied, UnknownOutcome) as e:
            log.info("%s not applied: %s", cmd.op, e)
            return None
        if "error" in res:
            log.info("%s refused: %s", cmd.op, res["error"])
        return res
