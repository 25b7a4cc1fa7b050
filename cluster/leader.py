"""Leader-only routines: started when this server gains leadership, stopped when it loses it.

Each routine reads replicated state and writes changes back as Raft commands; nothing here is
kept across leaders except what Raft holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from . import acl, gotime
from .commands import AclInit, InitIdentity, Remove
from .fsm import DELETING, FSM
from .peering.identity import new_identity
from .proposer import Proposer
from .raft import RaftNode
from .state.base import Touched

log = logging.getLogger("peerplane.leader")

DELETION_RATE = 10.0  # removals per second, as Consul's defaultDeletionApplyRate
DELETION_GRACE = 0.2  # seconds between a peering becoming DELETING and its removal starting
TERMINATE_WAIT = 3.0  # longest a removal waits for Terminated to reach the peer


class LeaderRoutines:
    def __init__(self, node: RaftNode, fsm: FSM, proposer: Proposer) -> None:
        self.node = node
        self.fsm = fsm
        self.proposer = proposer
        self._peerings_changed = asyncio.Event()
        self.visits = 0  # peerings the deletion routine looked at (tests count work with it)
        self._tasks: list[asyncio.Task[None]] = []
        # Called with a peering ID before a DELETING peering is removed (sends Terminated).
        self.before_remove: Callable[[str], Awaitable[None]] | None = None
        # Called with a peering's name before it is removed; True once nothing imported from it
        # is left (deleted through Raft in bounded batches).
        self.purge_imports: Callable[[str], Awaitable[bool]] | None = None
        self._routines: list[Callable[[], Awaitable[None]]] = [
            self._init_identity,
            self._remove_deleted,
        ]

    def add(self, routine: Callable[[], Awaitable[None]]) -> None:
        self._routines.append(routine)

    def enable_acls(self, initial_management_token: str | None) -> None:
        """Run the ACL initialisation on every new leader (see `_init_acl`)."""
        self._routines.append(lambda: self._init_acl(initial_management_token))

    async def _init_acl(self, initial_management: str | None) -> None:
        """Consul's initializeACLs: the built-in global-management policy, the anonymous token
        and, from the agent's configuration, the initial management token - each created once
        for the cluster. The management token's secret comes from the flag; its accessor is
        drawn here, before submission. Never logs a secret."""
        while True:
            fsm = self.fsm
            missing_policy = fsm.acl_policy(acl.GLOBAL_MANAGEMENT_ID) is None
            missing_anonymous = fsm.acl_token(acl.ANONYMOUS_ACCESSOR) is None
            missing_management = bool(initial_management) and (
                fsm.acl_token_by_secret(initial_management or "") is None
            )
            if not (missing_policy or missing_anonymous or missing_management):
                return
            now = gotime.now()
            management = acl.token_record(
                str(uuid.uuid4()), initial_management or "",
                acl.INITIAL_MANAGEMENT_DESCRIPTION, [acl.GLOBAL_MANAGEMENT_ID], now,
            ) if missing_management else None
            res = await self.proposer.attempt(AclInit(
                Policy=acl.management_policy_record(),
                Anonymous=acl.anonymous_token_record(now), Management=management,
            ))
            if res is not None and "error" in res:
                log.warning("ACL initialisation refused: %s", res["error"])
            elif res is not None and not res.get("changed"):
                # What is missing cannot be added (an ID taken by another token): give up.
                log.warning("ACL initialisation left the state as it was")
                return
            elif res is not None and missing_management:
                log.info("Created ACL initial management token from configuration")
            await asyncio.sleep(0.5)

    async def supervise(self) -> None:
        """Start the routines when this node becomes leader, stop them when it stops being
        leader: driven by the Raft node's state-change events (a 1 s look as a backstop)."""
        changed = asyncio.Event()
        self.node.on_state_change(changed.set)
        try:
            while True:
                changed.clear()
                leading = self.node.is_leader()
                if leading and not self._tasks:
                    log.info("gained leadership: starting leader routines")
                    self._tasks = [asyncio.create_task(r()) for r in self._routines]
                elif not leading and self._tasks:
                    log.info("lost leadership: stopping leader routines")
                    await self._stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 1.0)
        finally:
            await self._stop()

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _init_identity(self) -> None:
        """The first leader of a cluster creates its trust domain and CA."""
        while self.fsm.identity is None:
            await self.proposer.attempt(InitIdentity(**new_identity()))
            if self.fsm.identity is None:
                await asyncio.sleep(0.5)

    def on_change(self, touched: Touched | None) -> None:
        """The FSM applied something (event loop): the deletion routine looks again when a
        peering changed."""
        if touched is None or any(table == "peerings" for table, _ in touched):
            self._peerings_changed.set()

    async def _remove_deleted(self) -> None:
        """Deferred deletion: peerings marked DELETING are removed at a bounded rate, each after
        its peer stream (if any) carried Terminated to the other cluster (bounded wait). It
        reads the FSM's DELETING index, never the whole table, and sleeps until a peering
        changes."""
        while True:
            self._peerings_changed.clear()
            deleting = sorted(self.fsm.ids_in_state(DELETING))
            self.visits += len(deleting)
            for pid in deleting:
                if self.before_remove is not None:
                    try:
                        await asyncio.wait_for(self.before_remove(pid), TERMINATE_WAIT)
                    except Exception as e:  # noqa: BLE001 - removal must go on
                        log.info("terminating peering %s before removal: %r", pid, e)
                rec = self.fsm.by_id(pid)
                if rec is not None and self.purge_imports is not None and not (
                    await self.purge_imports(rec["Name"])
                ):
                    await asyncio.sleep(0.5)  # imports left (leadership or quorum lost): later
                    continue
                await self.proposer.attempt(Remove(ID=pid))
                await asyncio.sleep(1 / DELETION_RATE)
            if not deleting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._peerings_changed.wait(), 1.0)
                # A peering just marked stays readable as DELETING for a moment (as when this
                # routine polled every 0.2 s), and deletions arriving together go in one pass.
                await asyncio.sleep(DELETION_GRACE)
