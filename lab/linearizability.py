"""A linearizability checker for key/value histories (Wing–Gong search, Lowe's memoisation).

The search follows Porcupine (`anishathalye/porcupine`, checker.go): the history becomes a
doubly linked list of call and return entries in time order; the search "lifts" a call out of
the list when it linearizes it, and backtracks when it meets the return of an operation that
has not been linearized yet (that operation must have taken effect by then). Every reached
configuration (set of linearized ops as an int bitset, model state) is cached, so the search
never explores the same configuration twice — with modest concurrency it is close to linear.
One addition to Porcupine: ops the model marks read-only are linearized as soon as they are
legal and never revisited on backtracking (a legal read can move to the front of any valid
completion), which cuts the search sharply for read-heavy histories.

The history is split per key first (P-compositionality, Horn & Kroening 2015): a history is
linearizable iff each key's sub-history is, and small searches are far cheaper than one big one.

Operations whose outcome is unknown (timeout, 503 "outcome unknown": Jepsen's `:info`) have no
return time; they may take effect at any point after their invoke, or never. Unknown reads tell
nothing and are dropped.

Usage::

    result = check_operations(ops, RegisterModel(initial=None), timeout_per_key=10.0)
    assert result.ok, result.describe()
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation. `ret` None (or inf) means the outcome is unknown."""

    client: Hashable
    key: Hashable
    kind: str  # "write" | "read" for RegisterModel; other models may define more kinds
    input: Any = None  # the value written
    output: Any = None  # the value a read returned
    invoke: float = 0.0
    ret: float | None = None

    @property
    def unknown(self) -> bool:
        return self.ret is None or math.isinf(self.ret)

    def describe(self) -> str:
        if self.kind == "read":
            what = f"read -> {self.output!r}"
        elif self.kind == "write":
            what = f"write {self.input!r}"
        else:
            what = f"{self.kind}({self.input!r}) -> {self.output!r}"
        end = "?" if self.unknown else f"{self.ret:.6f}"
        return f"[{self.client}] {what} @ {self.invoke:.6f}..{end}"


def write(
    client: Hashable, key: Hashable, value: Any, invoke: float, ret: float | None
) -> Operation:
    """Shorthand for a write record (ret=None: outcome unknown)."""
    return Operation(client, key, "write", input=value, invoke=invoke, ret=ret)


def read(client: Hashable, key: Hashable, value: Any, invoke: float, ret: float) -> Operation:
    """Shorthand for a completed read that returned `value`."""
    return Operation(client, key, "read", output=value, invoke=invoke, ret=ret)


class Model(Protocol):
    """A sequential specification. States must be hashable (they are memoised).

    The checker hands `step` operations whose input/output went through `freeze`. A model may
    also define `read_only(op) -> bool`: True promises that the op never changes the state, so
    the search may linearize it as soon as it is legal and never try it anywhere else.
    """

    def init(self) -> Hashable: ...

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        """Apply `op` to `state`: (whether the op's observed output is legal, next state)."""
        ...


def freeze(value: Any) -> Hashable:
    """Make JSON-like values (dicts, lists) hashable so they can live in a model state."""
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((k, freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class RegisterModel:
    """A read/write register: state is the last written value; a read must return it."""

    initial: Any = None

    def init(self) -> Hashable:
        return freeze(self.initial)

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        if op.kind == "write":
            return True, op.input
        if op.kind == "read":
            return op.output == state, state
        raise ValueError(f"RegisterModel: unknown operation kind {op.kind!r}")

    def read_only(self, op: Operation) -> bool:
        return op.kind == "read"


class Verdict(StrEnum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown (timeout)"


@dataclass
class Counterexample:
    """Where the deepest partial linearization got stuck."""

    blocked: Operation  # must have taken effect before it returned; no order allows it
    state: Hashable  # model state after the deepest partial linearization
    depth: int  # how many ops that partial linearization had
    last_linearized: list[Operation]  # its tail, oldest first
    candidates: list[Operation]  # pending ops that could have gone next (all failed)

    def __str__(self) -> str:
        lines = [
            f"cannot linearize {self.blocked.describe()}",
            f"  after {self.depth} linearized ops the state is {self.state!r}",
        ]
        lines += [f"  linearized: {op.describe()}" for op in self.last_linearized]
        lines += [f"  candidate:  {op.describe()}" for op in self.candidates]
        return "\n".join(lines)


@dataclass
class KeyResult:
    key: Hashable
    verdict: Verdict
    ops: int
    elapsed: float
    counterexample: Counterexample | None = None

    def describe(self) -> str:
        head = f"key {self.key!r}: {self.verdict} ({self.ops} ops, {self.elapsed:.3f}s)"
        return head if self.counterexample is None else f"{head}\n{self.counterexample}"


@dataclass
class CheckResult:
    keys: dict[Hashable, KeyResult] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        """Any violation wins; otherwise any timeout makes the whole answer unknown."""
        verdicts = {r.verdict for r in self.keys.values()}
        for v in (Verdict.NOT_LINEARIZABLE, Verdict.UNKNOWN):
            if v in verdicts:
                return v
        return Verdict.LINEARIZABLE

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    def failures(self) -> dict[Hashable, KeyResult]:
        return {k: r for k, r in self.keys.items() if r.verdict is not Verdict.LINEARIZABLE}

    def describe(self) -> str:
        bad = self.failures()
        lines = [
            f"{self.verdict}: {len(self.keys)} key(s) checked, {len(bad)} not proven linearizable"
        ]
        lines += [r.describe() for r in bad.values()]
        return "\n".join(lines)


def check_operations(
    ops: Iterable[Operation],
    model: Model | None = None,
    timeout_per_key: float | None = 10.0,
) -> CheckResult:
    """Check a history, key by key. `timeout_per_key` None means no budget."""
    model = model if model is not None else RegisterModel()
    partitions: dict[Hashable, list[Operation]] = {}
    for op in ops:
        if op.unknown and op.kind == "read":
            continue  # an unanswered read constrains nothing
        partitions.setdefault(op.key, []).append(op)
    result = CheckResult()
    for key, part in partitions.items():
        result.keys[key] = check_partition(key, part, model, timeout_per_key)
    return result


_NIL = -1
_HEAD = 0
_TAIL_SHOWN = 3  # how many ops of context a counterexample shows on each side


def check_partition(
    key: Hashable, ops: Sequence[Operation], model: Model, timeout: float | None
) -> KeyResult:
    """The search for one key's history. Bit i of the bitset stands for ops[i]."""
    started = time.monotonic()
    deadline = math.inf if timeout is None else started + timeout

    # Entries in time order; entry 0 is the list head. At equal times calls sort before
    # returns, so touching intervals count as concurrent (never a false "not linearizable").
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke, 0, i))
        if not op.unknown:
            assert op.ret is not None
            if op.ret < op.invoke:
                raise ValueError(f"operation returns before it is invoked: {op.describe()}")
            events.append((op.ret, 1, i))
    events.sort()
    n = len(events)
    op_of = [_NIL] + [i for _, _, i in events]
    is_call = [False] + [k == 0 for _, k, _ in events]
    match = [_NIL] * (n + 1)  # call entry -> its return entry (_NIL: unknown outcome)
    call_entry = [_NIL] * len(ops)
    for idx in range(1, n + 1):
        if is_call[idx]:
            call_entry[op_of[idx]] = idx
        else:
            match[call_entry[op_of[idx]]] = idx
    nxt = list(range(1, n + 1)) + [_NIL]
    prv = list(range(-1, n))

    def unlink(e: int) -> None:
        nxt[prv[e]] = nxt[e]
        if nxt[e] != _NIL:
            prv[nxt[e]] = prv[e]

    def relink(e: int) -> None:  # exact inverse of unlink, valid in LIFO order (dancing links)
        nxt[prv[e]] = e
        if nxt[e] != _NIL:
            prv[nxt[e]] = e

    step = model.step
    # What step() sees: frozen values, so states hash. Reports use the caller's ops.
    frozen = [replace(op, input=freeze(op.input), output=freeze(op.output)) for op in ops]
    is_read_only = getattr(model, "read_only", lambda op: False)
    read_only = [bool(is_read_only(op)) for op in frozen]
    state = model.init()
    linearized = 0
    cache: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = []  # (lifted call entry, state before it)
    remaining = sum(1 for op in ops if not op.unknown)  # unknown ops may stay unlinearized
    best: Counterexample | None = None
    entry = nxt[_HEAD]
    # Each configuration is scanned twice: first only read-only ops (taking a legal one now
    # loses nothing, since it can be moved to the front of any valid completion), then all.
    reads_pass = True
    steps = 0

    def result(verdict: Verdict) -> KeyResult:
        cex = best if verdict is Verdict.NOT_LINEARIZABLE else None
        return KeyResult(key, verdict, len(ops), time.monotonic() - started, cex)

    while remaining > 0:
        steps += 1
        if not steps & 0x3FF and time.monotonic() > deadline:
            return result(Verdict.UNKNOWN)
        if entry != _NIL and is_call[entry]:
            i = op_of[entry]
            if reads_pass and not read_only[i]:
                entry = nxt[entry]
                continue
            ok, new_state = step(state, frozen[i])
            if not ok:
                entry = nxt[entry]
                continue
            config = (linearized | (1 << i), new_state)
            if config not in cache:  # an explored configuration is a known dead end
                cache.add(config)
                stack.append((entry, state))
                linearized, state = config
                unlink(entry)
                if match[entry] != _NIL:
                    unlink(match[entry])
                    remaining -= 1
                if reads_pass:  # state unchanged: the reads before this one stay illegal
                    entry = nxt[prv[entry]]
                else:
                    entry, reads_pass = nxt[_HEAD], True
                continue
            if not read_only[i]:
                entry = nxt[entry]
                continue
            # A legal read-only op that leads to a known dead end makes this configuration one
            # too: fall through to backtrack.
        elif reads_pass:
            entry, reads_pass = nxt[_HEAD], False
            continue
        else:
            # A return of an op not yet linearized: it had to take effect before now, but no
            # pending op can go next. Remember the deepest such point for the report.
            if best is None or len(stack) > best.depth:
                best = _counterexample(ops, op_of, nxt, entry, stack, state)
        # Backtrack. Undoing a read-only op does not open new choices (see above): keep going.
        while True:
            if not stack:
                return result(Verdict.NOT_LINEARIZABLE)
            entry, state = stack.pop()
            i = op_of[entry]
            linearized &= ~(1 << i)
            if match[entry] != _NIL:
                relink(match[entry])
                remaining += 1
            relink(entry)
            if not read_only[i]:
                break
        entry, reads_pass = nxt[entry], False
    return result(Verdict.LINEARIZABLE)


def _counterexample(
    ops: Sequence[Operation],
    op_of: list[int],
    nxt: list[int],
    blocked_entry: int,
    stack: list[tuple[int, Hashable]],
    state: Hashable,
) -> Counterexample:
    candidates = []
    e = nxt[_HEAD]
    while e != blocked_entry and e != _NIL and len(candidates) < 2 * _TAIL_SHOWN:
        candidates.append(ops[op_of[e]])
        e = nxt[e]
    # The list only runs out when every known op is linearized, so a return is always found;
    # stay defensive anyway and blame the first pending op.
    blocked = ops[op_of[blocked_entry]] if blocked_entry != _NIL else candidates[0]
    return Counterexample(
        blocked=blocked,
        state=state,
        depth=len(stack),
        last_linearized=[ops[op_of[e]] for e, _ in stack[-_TAIL_SHOWN:]],
        candidates=[op for op in candidates if op is not blocked],
    )
