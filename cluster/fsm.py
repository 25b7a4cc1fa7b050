"""The replicated state machine: one `apply` that dispatches typed commands to its tables.

Pure and deterministic: every replica applies the same msgpack commands in the same order and
ends with the same tables and indexes. Nothing here reads the clock, draws randomness, or does
I/O; IDs, secrets and timestamps are chosen before a command is submitted and travel inside it.

`apply` never raises (an exception inside a PySyncObj replicated method wedges every node):
a malformed or refused command becomes an error result and changes nothing.

The tables live in cluster/state/ (peerings + secrets, servers + identity, ACLs); see
cluster/state/base.py for what a table provides and how to add one. Subscribers hear, after
each state-changing apply, the new index and which (table, key) records it touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from .commands import (
    Batch,
    CatalogCommand,
    CatalogImportPrune,
    CatalogImportService,
    CommandError,
    ConfigCommand,
    decode,
    encode,
)
from .state import catalog as catalog_table
from .state import config as config_table
from .state.acl import ACL, ANONYMOUS_TOKEN_ID, GLOBAL_MANAGEMENT_POLICY_ID
from .state.base import Changes, Record, Table, Touched
from .state.catalog import Catalog
from .state.config import ConfigEntries
from .state.peerings import Peerings, should_dial
from .state.servers import Servers
from .state.transitions import (
    ACTIVE,
    DELETING,
    ESTABLISHING,
    FAILING,
    LIVE,
    PENDING,
    TERMINATED,
)

__all__ = [
    "ACTIVE", "ANONYMOUS_TOKEN_ID", "DELETING", "ESTABLISHING", "FAILING", "FSM",
    "GLOBAL_MANAGEMENT_POLICY_ID", "LIVE", "PENDING", "TERMINATED", "CommandError", "Record",
    "encode", "should_dial",
]

T = TypeVar("T", bound=Table)
ACL_CHANGED = "ACLs changed after the request was authorized"
# Called after an apply with the new index and the (table, key) pairs it touched; after a
# restore with `touched=None` (everything may have changed).
Subscriber = Callable[[int, Touched | None], None]


class FSM:
    # The tables, in snapshot order. Adding one: list its class here (see state/base.py).
    TABLES: tuple[type[Table], ...] = (Peerings, Servers, ACL)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._changes = Changes()
        self._tables: dict[type[Table], Table] = {
            cls: cls(self._changes) for cls in self.TABLES
        }
        self._handlers: dict[type, Callable[[Any], dict[str, Any]]] = {}
        for table in self._tables.values():
            self._handlers.update(table.handlers())
        # Tables that take a command and the index it will get if it changes anything, and
        # check its fields themselves (cluster/state/catalog.py, config.py).
        self.catalog = Catalog(self._lock)
        self.config_entries = ConfigEntries(self._lock)
        for cls in (*catalog_table.COMMANDS, *config_table.COMMANDS):
            self._handlers[cls] = self._apply_table_command

    def table(self, cls: type[T]) -> T:
        return self._tables[cls]  # type: ignore[return-value]

    @property
    def peerings(self) -> Peerings:
        return self.table(Peerings)

    @property
    def servers(self) -> Servers:
        return self.table(Servers)

    @property
    def acl(self) -> ACL:
        return self.table(ACL)

    # ---- subscribers (called in the applying thread; must not block) ----

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def add_listener(self, fn: Callable[[int], None]) -> None:
        """A subscriber that only needs the new index."""
        self.subscribe(lambda index, _touched: fn(index))

    def _notify(self, index: int, touched: Touched | None) -> None:
        for fn in self._subscribers:
            try:
                fn(index, touched)
            except Exception:  # noqa: BLE001 - a subscriber must never wedge apply
                pass

    # ---- the one replicated entry point ----

    def apply(self, raw: bytes) -> dict[str, Any]:
        """The result of the command in `raw`; for a Batch, {"results": [each one's result]}.
        Subscribers hear once per apply, a batch's included: its last index and everything its
        commands touched."""
        return self._apply_raw(raw, None)

    def _apply_raw(self, raw: bytes, batch: set[tuple[str, Any]] | None) -> dict[str, Any]:
        """`batch`: what the batch this command is part of touched so far (its subscribers
        hear at the end of the batch), or None outside a batch."""
        try:
            cmd = decode(raw)
            if type(cmd) is Batch:
                if batch is not None:
                    raise CommandError("a batch cannot hold a batch")
                return self._apply_batch(cmd)
            with self._lock:
                try:
                    if cmd.acl_index is not None and cmd.acl_index != self.acl.revision:
                        raise CommandError(ACL_CHANGED, "acl_changed")
                    result = self._handlers[type(cmd)](cmd)
                finally:
                    touched = self._changes.take()
        except CommandError as e:
            return {"error": str(e), "kind": e.kind}
        except Exception as e:  # noqa: BLE001 - apply must be total
            return {"error": f"invalid command: {type(e).__name__}: {e}", "kind": "invalid"}
        if result.get("changed"):
            if batch is None:
                self._notify(self._changes.index, touched)
            else:
                batch |= touched
        return result

    def _apply_batch(self, cmd: Batch) -> dict[str, Any]:
        before, touched = self._changes.index, set()
        results = [self._apply_raw(part, touched) for part in cmd.commands]
        if self._changes.index != before:  # a command that changed something raised it
            self._notify(self._changes.index, frozenset(touched))
        return {"results": results}

    def _apply_table_command(self, cmd: CatalogCommand | ConfigCommand) -> dict[str, Any]:
        # Catalog commands of replication: refused unless the peering they name is live.
        if isinstance(cmd, (CatalogImportService, CatalogImportPrune)) and (
                cmd.PeeringID is not None):
            self._check_import_target(cmd.PeeringID, cmd.Peer)
        table: Catalog | ConfigEntries
        if isinstance(cmd, CatalogCommand):
            name, table = "catalog", self.catalog
        else:
            name, table = "config_entries", self.config_entries
        self.catalog.take_touched()
        result = table.apply(cmd, self._changes.index + 1)  # type: ignore[arg-type]
        names = self.catalog.take_touched()
        if result.pop("changed"):
            self._changes.index += 1
            if table is self.catalog and names:
                # (catalog, (peer, lowercased service name)) for each service it changed
                self._changes.touched.update(("catalog", key) for key in names)
            else:
                self._changes.touched.add((name, None))
            result.update(index=self._changes.index, changed=True)
        else:
            result["index"] = self._changes.index
        return result

    def _check_import_target(self, pid: Any, peer: Any) -> None:
        """Replication imports land only while their peering is live: one proposed just before
        the peering was deleted or terminated must not commit after the purge of its imports
        and be left behind (cluster/peering/importer.py sends the peering's ID)."""
        rec = self.peerings.by_id(pid) if isinstance(pid, str) else None
        if rec is None or rec["Name"] != peer or rec["State"] in (
            DELETING, TERMINATED
        ):
            raise CommandError("no live peering to import into", "conflict")

    def read(self, fn: Callable[[], T]) -> T:
        """Run `fn` under the apply lock: a consistent read across tables."""
        with self._lock:
            return fn()

    # ---- reads (any thread) ----

    @property
    def index(self) -> int:
        return self._changes.index

    @property
    def peerings_index(self) -> int:
        return self.peerings.index

    @property
    def identity(self) -> dict[str, str] | None:
        return self.servers.identity

    def get(self, partition: str, name: str) -> Record | None:
        with self._lock:
            return self.peerings.get(partition, name)

    def by_id(self, peering_id: str) -> Record | None:
        with self._lock:
            return self.peerings.by_id(peering_id)

    def list(self, partition: str | None) -> tuple[list[Record], int]:
        """Records of a partition (all partitions for None) sorted by name, and the table index.
        The order is kept as records change (state/ordered.py): this copies, never sorts."""
        with self._lock:
            return self.peerings.ordered.records(partition), self.peerings.index

    def peering_ids(self) -> list[str]:
        """Every peering ID (a full pass: leadership gained, snapshot restored)."""
        with self._lock:
            return list(self.peerings.ids)

    def ids_in_state(self, state: str) -> set[str]:
        with self._lock:
            return set(self.peerings.by_state[state])

    def state_counts(self) -> dict[str, int]:
        """How many peerings are in each state (from the by-state index, no scan)."""
        with self._lock:
            return {state: len(ids) for state, ids in self.peerings.by_state.items()}

    def secrets_for(self, peering_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self.peerings.secrets.get(peering_id, {}))

    def servers_view(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return dict(self.servers.servers)

    @property
    def acl_bootstrap_index(self) -> int:
        return self.acl.bootstrap_index

    @property
    def acl_policies_index(self) -> int:
        return self.acl.policies_index

    @property
    def acl_tokens_index(self) -> int:
        return self.acl.tokens_index

    @property
    def acl_revision(self) -> int:
        """What a command's `acl_index` is compared with (cluster/commands.py)."""
        with self._lock:
            return self.acl.revision

    def acl_policy(self, policy_id: str) -> Record | None:
        with self._lock:
            return self.acl.policies.get(policy_id)

    def acl_policy_by_name(self, name: str) -> Record | None:
        with self._lock:
            policy_id = self.acl.policy_names.get(name.lower())
            return self.acl.policies.get(policy_id) if policy_id else None

    def acl_policy_list(self) -> tuple[list[Record], int]:
        with self._lock:
            return self.acl.policy_list()

    def acl_token(self, accessor: str) -> Record | None:
        with self._lock:
            return self.acl.tokens.get(accessor)

    def acl_token_by_secret(self, secret: str) -> Record | None:
        with self._lock:
            accessor = self.acl.secret_ids.get(secret)
            return self.acl.tokens.get(accessor) if accessor else None

    def acl_token_list(self) -> tuple[list[Record], int]:
        with self._lock:
            return self.acl.token_list()

    # ---- snapshots ----

    def snapshot(self) -> bytes:
        with self._lock:
            return self.snapshot_unlocked()

    def snapshot_unlocked(self) -> bytes:
        """`snapshot` without the lock, for a process forked from the tick thread (between
        applies, so the records are consistent): a lock another thread held at the fork
        stays held in the child for ever."""
        data: dict[str, Any] = {"index": self._changes.index}
        for table in self._tables.values():
            data.update(table.snapshot())
        data.update(catalog=self.catalog.dump(), config_entries=self.config_entries.dump())
        return msgpack.packb(data, use_bin_type=True)

    def restore(self, blob: bytes) -> None:
        data = msgpack.unpackb(blob, raw=False)
        with self._lock:
            self._changes.index = data["index"]
            for table in self._tables.values():
                table.reset()
                table.restore(data)
            self.catalog.reset()
            self.config_entries.reset()
            self.catalog.load(data.get("catalog"))  # absent in older snapshots: empty
            self.config_entries.load(data.get("config_entries"))
            self._changes.take()
        self._notify(self._changes.index, None)
