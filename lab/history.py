"""Record client operations during a (chaos) run and hand them to the linearizability checker.

    recorder = HistoryRecorder()
    with recorder.op("c1", "peering-a", "write", meta) as op:
        reply = put(meta)
        if reply.status == 200:
            op.ok()
        elif reply.status in (400, 403, 404):
            op.fail()       # rejected: definitely did not take effect
        else:
            op.unknown()    # 503, timeout, connection reset: may or may not have happened
    with recorder.op("c2", "peering-a", "read") as op:
        op.ok(read_meta())
    result = recorder.check(final={"peering-a": meta_read_after_the_run})
    assert result.ok, result.describe()

Leaving the block without an outcome (including by an exception) records "unknown", which is
always sound: the checker lets such a write take effect any time after its invoke, or never.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .linearizability import CheckResult, Model, Operation, check_operations, freeze

_OK, _FAIL, _UNKNOWN = "ok", "fail", "unknown"


class PendingOp:
    """An invoked operation; exactly one of ok() / fail() / unknown() settles it."""

    def __init__(
        self, clock: Callable[[], float], client: Hashable, key: Hashable, kind: str, value: Any
    ) -> None:
        self._clock = clock
        self.client, self.key, self.kind, self.input = client, key, kind, value
        self.output: Any = None
        self.outcome: str | None = None
        self.ret: float | None = None
        self.invoke = clock()  # taken last: as close to sending the request as possible

    def _settle(self, outcome: str) -> None:
        if self.outcome is not None:
            raise RuntimeError(f"operation already settled as {self.outcome}")
        self.outcome = outcome

    def ok(self, output: Any = None) -> None:
        """The server acknowledged (for a read: `output` is the value it returned)."""
        ret = self._clock()  # first: the response has arrived already
        self._settle(_OK)
        self.output, self.ret = output, ret

    def fail(self) -> None:
        """Definitely did not take effect (a clean rejection); dropped from the history."""
        ret = self._clock()
        self._settle(_FAIL)
        self.ret = ret  # kept for history files; the checker drops failed ops

    def unknown(self) -> None:
        """May or may not have taken effect (timeout, 503 outcome unknown, reset)."""
        ret = self._clock()
        self._settle(_UNKNOWN)
        self.ret = ret  # when the client gave up; the checker treats the op as open-ended

    def to_operation(self) -> Operation | None:
        """The checker's record; None when the op tells nothing (failed, or an unknown read)."""
        if self.outcome == _FAIL:
            return None
        if self.outcome == _OK:
            return Operation(
                self.client, self.key, self.kind, self.input, self.output, self.invoke, self.ret
            )
        if self.kind == "read":
            return None
        # unknown, or still in flight when exported: both may take effect later
        return Operation(self.client, self.key, self.kind, self.input, None, self.invoke, None)


@dataclass(frozen=True)
class HistorySummary:
    ops: int
    writes: int
    acknowledged_writes: int
    reads: int
    ok_reads: int
    failed: int
    unknown: int  # includes ops still in flight


class HistoryRecorder:
    """Thread-safe; timestamps from one monotonic clock shared by all clients."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[PendingOp] = []

    @contextmanager
    def op(
        self, client: Hashable, key: Hashable, kind: str, value: Any = None
    ) -> Iterator[PendingOp]:
        """Invoke now; settle with ok()/fail()/unknown() inside the block (default: unknown)."""
        pending = PendingOp(self._clock, client, key, kind, value)
        with self._lock:  # recorded at invoke, so ops in flight at export count as unknown
            self._ops.append(pending)
        try:
            yield pending
        finally:
            if pending.outcome is None:
                pending.unknown()

    def _snapshot(self) -> list[PendingOp]:
        with self._lock:
            return list(self._ops)

    def records(self) -> list[PendingOp]:
        """Every operation invoked so far, settled or still in flight (for history files)."""
        return self._snapshot()

    def operations(self) -> list[Operation]:
        return [o for p in self._snapshot() if (o := p.to_operation()) is not None]

    def summary(self) -> HistorySummary:
        ops = self._snapshot()
        outcomes = [(p.kind, p.outcome or _UNKNOWN) for p in ops]
        return HistorySummary(
            ops=len(ops),
            writes=sum(k == "write" for k, _ in outcomes),
            acknowledged_writes=sum(k == "write" and o == _OK for k, o in outcomes),
            reads=sum(k == "read" for k, _ in outcomes),
            ok_reads=sum(k == "read" and o == _OK for k, o in outcomes),
            failed=sum(o == _FAIL for _, o in outcomes),
            unknown=sum(o == _UNKNOWN for _, o in outcomes),
        )

    def check(
        self,
        final: Mapping[Hashable, Any] | None = None,
        model: Model | None = None,
        timeout_per_key: float | None = 10.0,
    ) -> CheckResult:
        """Check the history; `final` (key -> value read after the run) adds one last read
        per key, so a lost acknowledged write shows up as a violation."""
        return check_history(self.operations(), final, model, timeout_per_key)


def final_reads(ops: Iterable[Operation], final: Mapping[Hashable, Any]) -> list[Operation]:
    """One read per key, after every known invoke and return: the state observed at the end.
    Unknown writes stay concurrent with it (they may still land before it, or never)."""
    times = [t for op in ops for t in (op.invoke, op.ret) if t is not None and not math.isinf(t)]
    start = max(times, default=0.0) + 1.0
    return [
        Operation("final", key, "read", output=value, invoke=start, ret=start + 1.0)
        for key, value in final.items()
    ]


def lost_writes(
    ops: Iterable[Operation], final: Mapping[Hashable, Any]
) -> dict[Hashable, list[Operation]]:
    """Acknowledged writes that register semantics say cannot precede the final value.

    A write W is lost if it was invoked after every write of the final value had returned:
    then W is linearized after all of them and the final read, later than W's return, should
    not see the final value. Real time alone decides, so there are no false alarms; the full
    check (check_history(ops, final)) finds more. If no write produced the final value (it is
    the initial value, or a phantom), every acknowledged write of that key is lost.
    """
    ops = list(ops)
    lost: dict[Hashable, list[Operation]] = {}
    for key, value in final.items():
        value = freeze(value)
        writes = [op for op in ops if op.key == key and op.kind == "write"]
        sources = [w for w in writes if freeze(w.input) == value]
        # latest time by which some write of the final value may still have taken effect
        horizon = max(
            (math.inf if w.unknown else w.ret for w in sources),
            default=-math.inf,
        )
        missing = [w for w in writes if not w.unknown and w.invoke > horizon]
        if missing:
            lost[key] = missing
    return lost


def check_history(
    ops: Iterable[Operation],
    final: Mapping[Hashable, Any] | None = None,
    model: Model | None = None,
    timeout_per_key: float | None = 10.0,
) -> CheckResult:
    """Check operations (default model: a register starting at None), plus one final read per
    key in `final` (key -> value observed after the run), so a lost write is a violation."""
    ops = list(ops)
    if final:
        ops += final_reads(ops, final)
    return check_operations(ops, model, timeout_per_key)
