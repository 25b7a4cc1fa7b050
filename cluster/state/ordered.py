"""Records kept in sort order as they change: a write moves entries within one block (bisect), a
read copies the blocks - no sort of every record per write or per read."""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Any

Record = dict[str, Any]


class Ordered:
    """Records in sort-key order, held in blocks of at most 2 * _LOAD: a write bisects to its
    block and moves entries within it only. One flat list made each insert a memmove of the
    whole table (~10 us a write at 40,000 peerings, on every server, growing with the table)."""

    _LOAD = 256

    def __init__(self, sort_key: Callable[[Record], Any]) -> None:
        self._sort_key = sort_key
        self._keys: list[list[Any]] = []  # blocks of sort keys
        self._recs: list[list[Record]] = []  # the records, block for block
        self._maxes: list[Any] = []  # each block's last key
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def put(self, old: Record | None, new: Record) -> None:
        """`new` replaces `old` (None: a new record)."""
        if old is not None:
            self.drop(old)
        key = self._sort_key(new)
        self._len += 1
        if not self._maxes:
            self._keys.append([key])
            self._recs.append([new])
            self._maxes.append(key)
            return
        b = bisect.bisect_left(self._maxes, key)
        if b == len(self._maxes):  # past the last block: append to it
            b -= 1
            self._maxes[b] = key
        keys, recs = self._keys[b], self._recs[b]
        i = bisect.bisect_left(keys, key)
        keys.insert(i, key)
        recs.insert(i, new)
        if len(keys) > 2 * self._LOAD:  # split the block in two
            half = self._LOAD
            self._keys[b:b + 1] = [keys[:half], keys[half:]]
            self._recs[b:b + 1] = [recs[:half], recs[half:]]
            self._maxes[b:b + 1] = [keys[half - 1], keys[-1]]

    def drop(self, old: Record) -> None:
        key = self._sort_key(old)
        b = bisect.bisect_left(self._maxes, key)
        if b == len(self._maxes):
            return
        keys = self._keys[b]
        i = bisect.bisect_left(keys, key)
        if i == len(keys) or keys[i] != key:
            return
        del keys[i]
        del self._recs[b][i]
        self._len -= 1
        if not keys:
            del self._keys[b], self._recs[b], self._maxes[b]
        elif i == len(keys):
            self._maxes[b] = keys[-1]

    def records(self) -> list[Record]:
        return list(itertools.chain.from_iterable(self._recs))


class Grouped:
    """One `Ordered` per group (e.g. partition). Records of every group (group None) are the
    groups' lists merged: the API always lists one partition, so a write keeps one order, not
    two."""

    def __init__(self, group: Callable[[Record], Hashable],
                 sort_key: Callable[[Record], Any]) -> None:
        self._group, self._sort_key = group, sort_key
        self._groups: dict[Hashable, Ordered] = {}

    def put(self, old: Record | None, new: Record) -> None:
        if old is not None:
            self.drop(old)
        g = self._group(new)
        ordered = self._groups.get(g)
        if ordered is None:
            ordered = self._groups[g] = Ordered(self._sort_key)
        ordered.put(None, new)

    def drop(self, old: Record) -> None:
        g = self._group(old)
        group = self._groups.get(g)
        if group is not None:
            group.drop(old)
            if not len(group):
                del self._groups[g]

    def records(self, group: Hashable | None = None) -> list[Record]:
        if group is None:
            lists = [ordered.records() for ordered in self._groups.values()]
            if len(lists) == 1:
                return lists[0]
            return list(heapq.merge(*lists, key=self._sort_key))
        ordered = self._groups.get(group)
        return ordered.records() if ordered is not None else []
