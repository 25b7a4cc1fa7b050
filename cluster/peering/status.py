"""Consul's StreamStatus shapes (the in-memory stream tracker; never replicated)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol


def empty_status() -> dict[str, Any]:
    """What Consul shows when its tracker has no entry for a peering: every field null. A
    peering whose stream is (or was) up has lists for the services instead."""
    return {"ImportedServices": None, "ExportedServices": None, "LastHeartbeat": None,
            "LastReceive": None, "LastSend": None}


def snapshot(streams: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A copy of the stream status that later changes (made in place) do not touch."""
    return {pid: {k: list(v) if isinstance(v, list) else v for k, v in st.items()}
            for pid, st in streams.items()}


class _Node(Protocol):
    def is_leader(self) -> bool: ...
    def leader_state_seen(self) -> Any: ...


class SeenStreams(Mapping[str, dict[str, Any]]):
    """The stream status reads render: this server's own while it leads (streams run on the
    leader), else the copy the leader sent with its last read-index answer - a default or
    ?consistent read at a follower shows what the leader would have shown (cluster/raft.py,
    follower reads); empty before any came."""

    def __init__(self, node: _Node, own: Mapping[str, dict[str, Any]]) -> None:
        self._node, self._own = node, own

    def _current(self) -> Mapping[str, dict[str, Any]]:
        if self._node.is_leader():
            return self._own
        return self._node.leader_state_seen() or {}

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._current()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._current().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())
