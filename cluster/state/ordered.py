"""Records kept in sort order as they change: a write moves one entry (bisect), a read copies
the list - no sort of every record per write or per read."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable
from typing import Any

Record = dict[str, Any]


class Ordered:
    def __init__(self, sort_key: Callable[[Record], Any]) -> None:
        self._sort_key = sort_key
        self._keys: list[Any] = []
        self._recs: list[Record] = []

    def __len__(self) -> int:
        return len(self._recs)

    def put(self, old: Record | None, new: Record) -> None:
        """`new` replaces `old` (None: a new record)."""
        if old is not None:
            self.drop(old)
        key = self._sort_key(new)
        i = bisect.bisect_left(self._keys, key)
        self._keys.insert(i, key)
        self._recs.insert(i, new)

    def drop(self, old: Record) -> None:
        key = self._sort_key(old)
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]
            del self._recs[i]

    def records(self) -> list[Record]:
        return list(self._recs)


class Grouped:
    """One `Ordered` per group (e.g. partition) plus one over everything (group None)."""

    def __init__(self, group: Callable[[Record], Hashable],
                 sort_key: Callable[[Record], Any]) -> None:
        self._group, self._sort_key = group, sort_key
        self._all = Ordered(sort_key)
        self._groups: dict[Hashable, Ordered] = {}

    def put(self, old: Record | None, new: Record) -> None:
        self._all.put(old, new)
        if old is not None:
            self._groups[self._group(old)].drop(old)
        g = self._group(new)
        if g not in self._groups:
            self._groups[g] = Ordered(self._sort_key)
        self._groups[g].put(None, new)

    def drop(self, old: Record) -> None:
        self._all.drop(old)
        group = self._groups.get(self._group(old))
        if group is not None:
            group.drop(old)
            if not len(group):
                del self._groups[self._group(old)]

    def records(self, group: Hashable | None = None) -> list[Record]:
        if group is None:
            return self._all.records()
        ordered = self._groups.get(group)
        return ordered.records() if ordered is not None else []
