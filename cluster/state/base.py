"""What every FSM table shares: the FSM-wide index and the record of what an apply touched.

A table is a class with:
- `name` - the first half of the (table, key) pairs it reports as touched;
- `handlers()` - {command class: method(cmd) -> result}; a method validates everything first,
  then mutates, raises CommandError to refuse (nothing changed), and calls `self.bump()` and
  `self.touch(key)` for what it changed;
- `reset()`, `snapshot()` (a dict merged into the FSM's snapshot map: use keys of your own)
  and `restore(data)` (the whole snapshot map; a key missing from an older snapshot means an
  empty table);
- its reads (any thread, under the FSM's lock via `FSM.read`).
To add one: write it in cluster/state/, register its command classes in cluster/commands.py
(`register`), and list the class in `FSM.TABLES` (cluster/fsm.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Record = dict[str, Any]
Result = dict[str, Any]
Touched = frozenset[tuple[str, Any]]


class Changes:
    """The FSM-wide index, raised by every state-changing command, and what the command in
    progress touched (handed to the FSM's subscribers after it applied)."""

    def __init__(self) -> None:
        self.index = 0
        self.touched: set[tuple[str, Any]] = set()

    def take(self) -> Touched:
        touched, self.touched = frozenset(self.touched), set()
        return touched


class Table:
    name = ""

    def __init__(self, changes: Changes) -> None:
        self.changes = changes
        self.reset()

    def bump(self) -> int:
        self.changes.index += 1
        return self.changes.index

    def touch(self, key: Any) -> None:
        self.changes.touched.add((self.name, key))

    def unchanged(self) -> Result:
        return {"index": self.changes.index}

    def handlers(self) -> dict[type, Callable[[Any], Result]]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, data: dict[str, Any]) -> None:
        raise NotImplementedError
