"""The linearizability checker and the history recorder, on hand-made and generated histories.

Pure Python: no cluster. Times in hand-made histories are abstract numbers.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.history import HistoryRecorder, check_history, final_reads, lost_writes
from lab.linearizability import (
    Operation,
    RegisterModel,
    Verdict,
    check_operations,
    freeze,
    read,
    write,
)

LIN, NOT, UNKNOWN = Verdict.LINEARIZABLE, Verdict.NOT_LINEARIZABLE, Verdict.UNKNOWN


def verdict(ops: list[Operation], initial: object = None) -> Verdict:
    return check_operations(ops, RegisterModel(initial)).verdict


# --- hand-made histories -------------------------------------------------------------------


def test_empty_history_is_linearizable():
    assert check_operations([]).ok


def test_sequential_history_is_linearizable():
    ops = [
        read("c1", "k", None, 0, 1),
        write("c1", "k", 1, 2, 3),
        read("c2", "k", 1, 4, 5),
        write("c2", "k", 2, 6, 7),
        read("c1", "k", 2, 8, 9),
    ]
    assert verdict(ops) is LIN


@pytest.mark.parametrize("seen", [(1, 2), (2, 1)])
def test_concurrent_writes_may_take_effect_in_either_order(seen):
    first, second = seen
    ops = [
        write("c1", "k", 1, 0, 10),
        write("c2", "k", 2, 1, 11),
        read("c3", "k", first, 2, 3),
        read("c3", "k", second, 4, 5),
        read("c4", "k", second, 12, 13),
    ]
    assert verdict(ops) is LIN


def test_stale_read_after_a_completed_write_is_not_linearizable():
    ops = [
        write("c1", "k", 1, 0, 1),
        write("c1", "k", 2, 2, 3),
        read("c2", "k", 1, 4, 5),  # write 2 finished before this read began
    ]
    result = check_operations(ops)
    assert result.verdict is NOT
    cex = result.keys["k"].counterexample
    assert cex is not None and cex.blocked == ops[2]
    assert "read -> 1" in result.describe()


def test_read_of_a_value_never_written_is_not_linearizable():
    ops = [write("c1", "k", 1, 0, 1), read("c2", "k", 7, 0.5, 2)]
    assert verdict(ops) is NOT


def test_touching_intervals_count_as_concurrent():
    # a read that starts exactly when a write returns may still precede it
    ops = [write("c1", "k", 1, 0, 5), read("c2", "k", None, 5, 6)]
    assert verdict(ops) is LIN


def test_unknown_write_whose_value_appears_later_is_linearizable():
    ops = [
        write("c1", "k", 1, 0, None),  # timed out
        read("c2", "k", None, 1, 2),  # not yet applied
        read("c2", "k", 1, 30, 31),  # applied long after the client gave up
        read("c3", "k", 1, 40, 41),
    ]
    assert verdict(ops) is LIN


def test_unknown_write_never_seen_is_linearizable():
    ops = [
        write("c1", "k", 1, 0, 1),
        write("c2", "k", 2, 2, float("inf")),  # inf works like None
        read("c1", "k", 1, 3, 4),
        read("c3", "k", 1, 50, 51),
    ]
    assert verdict(ops) is LIN


def test_unknown_write_cannot_take_effect_before_it_was_invoked():
    ops = [read("c1", "k", 1, 0, 1), write("c2", "k", 1, 2, None)]
    assert verdict(ops) is NOT


def test_unknown_write_cannot_take_effect_twice():
    ops = [
        write("c1", "k", 1, 0, None),
        read("c2", "k", 1, 1, 2),
        write("c3", "k", 2, 3, 4),
        read("c2", "k", 1, 5, 6),  # 1 again: the single unknown write cannot explain it
    ]
    assert verdict(ops) is NOT


def test_unknown_reads_are_dropped():
    ops = [write("c1", "k", 1, 0, 1), Operation("c2", "k", "read", output=42, invoke=2, ret=None)]
    assert verdict(ops) is LIN


def test_reads_that_contradict_real_time_order_are_not_linearizable():
    ops = [
        write("c1", "k", 1, 0, 10),
        read("c2", "k", 1, 1, 2),  # the write has taken effect by 2...
        read("c3", "k", 0, 3, 4),  # ...so a read that starts at 3 cannot see the old value
    ]
    assert verdict(ops, initial=0) is NOT
    # the same reads in the other real-time order are fine
    swapped = [ops[0], read("c2", "k", 0, 1, 2), read("c3", "k", 1, 3, 4)]
    assert verdict(swapped, initial=0) is LIN


def test_dict_values_such_as_meta_are_compared_by_content():
    ops = [
        write("c1", "p", {"env": "prod", "tier": ["a", "b"]}, 0, 1),
        read("c2", "p", {"tier": ["a", "b"], "env": "prod"}, 2, 3),
    ]
    assert verdict(ops) is LIN
    assert verdict([*ops, read("c2", "p", {"env": "dev"}, 4, 5)]) is NOT


def test_a_violation_is_reported_for_its_key_only():
    ops = [
        write("c1", "a", 1, 0, 1),
        read("c2", "a", 1, 2, 3),
        write("c1", "b", 1, 0, 1),
        write("c1", "b", 2, 2, 3),
        read("c2", "b", 1, 4, 5),
    ]
    result = check_operations(ops)
    assert result.verdict is NOT
    assert result.keys["a"].verdict is LIN
    assert result.keys["b"].verdict is NOT
    assert set(result.failures()) == {"b"}
    assert result.keys["a"].ops == 2 and result.keys["b"].ops == 3


def test_a_return_before_invoke_is_rejected():
    with pytest.raises(ValueError):
        check_operations([write("c1", "k", 1, 5, 4)])


def test_time_budget_gives_unknown_on_a_pathological_history():
    # 24 mutually concurrent writes and a read nothing can explain: proving "not linearizable"
    # means visiting every subset of the writes. A second key stays cheap and is decided.
    ops = [write(f"c{i}", "hard", i, 0, 100) for i in range(24)]
    ops.append(read("r", "hard", "never", 0, 100))
    ops += [write("c1", "easy", 1, 0, 1), read("c2", "easy", 1, 2, 3)]
    started = time.monotonic()
    result = check_operations(ops, timeout_per_key=0.2)
    elapsed = time.monotonic() - started
    assert result.keys["hard"].verdict is UNKNOWN
    assert result.keys["easy"].verdict is LIN
    assert result.verdict is UNKNOWN and not result.ok
    assert elapsed < 30  # returned, near its budget (no tight wall-clock claim)


def test_a_custom_model_plugs_in():
    class Counter:
        """An increment-only counter: "write" adds its input, "read" returns the total."""

        def init(self) -> int:
            return 0

        def step(self, state: int, op: Operation) -> tuple[bool, int]:
            if op.kind == "write":
                return True, state + op.input
            return op.output == state, state

    ops = [
        write("c1", "n", 1, 0, 10),
        write("c2", "n", 2, 0, 10),
        read("c3", "n", 2, 1, 2),
        read("c3", "n", 3, 11, 12),
    ]
    assert check_operations(ops, Counter()).ok
    assert not check_operations([*ops, read("c3", "n", 2, 13, 14)], Counter()).ok


# --- generated histories -------------------------------------------------------------------

NEVER = "never-written"

# (kind, key, value, time before the linearization point it was invoked, time after it returned)
steps = st.lists(
    st.tuples(
        st.sampled_from(["write", "read"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 3),
        st.floats(0, 4),
        st.floats(0, 4),
        st.sampled_from(["ok"] * 4 + ["unknown", "phantom"]),
    ),
    min_size=1,
    max_size=40,
)


def from_sequential_execution(plan) -> list[Operation]:
    """Run `plan` against a real register at points 0, 1, 2, ... and wrap every op in a random
    interval around its point. Unknown writes took effect; phantom writes never did."""
    state: dict[str, int | None] = {}
    ops = []
    for t, (kind, key, value, before, after, fate) in enumerate(plan):
        invoke, ret = t - before, t + after
        if kind == "read":
            ops.append(read(f"c{t}", key, state.get(key), invoke, ret))
        elif fate == "phantom":
            ops.append(write(f"c{t}", key, value, invoke, None))
        else:
            state[key] = value
            ops.append(write(f"c{t}", key, value, invoke, None if fate == "unknown" else ret))
    return ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_histories_of_a_real_register_are_linearizable(plan):
    result = check_operations(from_sequential_execution(plan), timeout_per_key=None)
    assert result.ok, result.describe()


@settings(max_examples=300, deadline=None)
@given(steps, st.data())
def test_one_read_of_a_never_written_value_breaks_linearizability(plan, data):
    ops = from_sequential_execution(plan)
    reads = [i for i, op in enumerate(ops) if op.kind == "read"]
    if not reads:
        ops.append(read("late", "a", None, 1000, 1001))
        reads = [len(ops) - 1]
    i = data.draw(st.sampled_from(reads))
    ops[i] = read(ops[i].client, ops[i].key, NEVER, ops[i].invoke, ops[i].ret)
    result = check_operations(ops, timeout_per_key=None)
    assert result.verdict is NOT
    assert set(result.failures()) == {ops[i].key}


def brute_force(ops: list[Operation], initial: object = None) -> bool:
    """Definition-level oracle: some subset of the unknown ops plus all known ops has an order
    that respects real time and register semantics."""
    known = [op for op in ops if not op.unknown]
    unknown = [op for op in ops if op.unknown]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            chosen = known + list(extra)
            for order in itertools.permutations(chosen):
                if _respects_real_time(order) and _legal(order, initial):
                    return True
    return False


def _respects_real_time(order) -> bool:
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if not b.unknown and b.ret < a.invoke:  # b finished before a started
                return False
    return True


def _legal(order, initial) -> bool:
    state = freeze(initial)
    for op in order:
        if op.kind == "write":
            state = freeze(op.input)
        elif freeze(op.output) != state:
            return False
    return True


small_random_histories = st.lists(
    st.tuples(
        st.sampled_from(["write", "read"]),
        st.sampled_from([None, 1, 2]),
        st.integers(0, 6),
        st.integers(0, 3),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(small_random_histories)
def test_checker_agrees_with_brute_force_on_random_histories(spec):
    ops = []
    for n, (kind, value, invoke, length, unknown) in enumerate(spec):
        if kind == "write":
            ops.append(write(f"c{n}", "k", value, invoke, None if unknown else invoke + length))
        else:
            ops.append(read(f"c{n}", "k", value, invoke, invoke + length))
    assert check_operations(ops, timeout_per_key=None).ok == brute_force(ops)


# --- the recorder --------------------------------------------------------------------------


def ticking_clock():
    """A deterministic clock: every reading is one tick later."""
    return itertools.count().__next__


def test_recorder_records_outcomes_and_exports_what_the_checker_needs():
    rec = HistoryRecorder(clock=ticking_clock())
    with rec.op("c1", "k", "write", 1) as op:
        op.ok()
    with rec.op("c2", "k", "read") as op:
        op.ok(1)
    with rec.op("c1", "k", "write", 2) as op:
        op.fail()  # rejected: gone from the history
    with rec.op("c1", "k", "write", 3) as op:
        op.unknown()
    with rec.op("c2", "k", "read") as op:
        op.unknown()  # tells nothing: dropped
    with rec.op("c3", "k", "write", 4):
        pass  # no outcome: counts as unknown
    with pytest.raises(ConnectionError), rec.op("c3", "k", "write", 5):
        raise ConnectionError("reset")

    ops = rec.operations()
    assert [(o.kind, o.input, o.output, o.unknown) for o in ops] == [
        ("write", 1, None, False),
        ("read", None, 1, False),
        ("write", 3, None, True),
        ("write", 4, None, True),
        ("write", 5, None, True),
    ]
    assert all(o.ret is None or o.invoke < o.ret for o in ops)
    assert ops[0].ret < ops[1].invoke  # one clock, real-time order kept

    s = rec.summary()
    assert (s.ops, s.writes, s.acknowledged_writes, s.reads, s.ok_reads) == (7, 5, 1, 2, 1)
    assert (s.failed, s.unknown) == (1, 4)
    assert rec.check().ok


def test_an_operation_settles_once():
    rec = HistoryRecorder()
    with pytest.raises(RuntimeError), rec.op("c1", "k", "write", 1) as op:
        op.ok()
        op.unknown()


def test_an_operation_still_in_flight_exports_as_unknown():
    rec = HistoryRecorder(clock=ticking_clock())
    with rec.op("c1", "k", "write", 1):
        (op,) = rec.operations()
        assert op.unknown and rec.summary().unknown == 1


def test_recorder_is_thread_safe_and_a_locked_register_is_linearizable():
    rec = HistoryRecorder()
    lock = threading.Lock()
    register: dict[str, int] = {}

    def client(n: int) -> None:
        for i in range(150):
            key = "ab"[i % 2]
            if (i + n) % 3:
                with rec.op(n, key, "read") as op, lock:
                    op.ok(register.get(key))
            else:
                with rec.op(n, key, "write", n * 1000 + i) as op:
                    with lock:
                        register[key] = n * 1000 + i
                    op.ok()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rec.summary().ops == 8 * 150
    result = rec.check(final=dict(register))
    assert result.ok, result.describe()
    assert set(result.keys) == {"a", "b"}


def test_final_reads_come_after_everything_known():
    ops = [write("c1", "k", 1, 0, 5), write("c2", "k", 2, 6, None)]
    (final,) = final_reads(ops, {"k": 2})
    assert final.kind == "read" and final.output == 2 and final.invoke > 5


def test_a_lost_acknowledged_write_is_found_by_both_checks():
    ops = [
        write("c1", "k", 1, 0, 1),
        write("c1", "k", 2, 2, 3),  # acknowledged...
        read("c2", "k", 2, 4, 5),
    ]
    assert check_history(ops, final={"k": 2}).ok
    assert lost_writes(ops, {"k": 2}) == {}
    # ...but the cluster ends with the older value: write 2 was lost
    assert check_history(ops, final={"k": 1}).verdict is NOT
    assert lost_writes(ops, {"k": 1}) == {"k": [ops[1]]}


def test_lost_writes_forgives_what_real_time_cannot_rule_out():
    ops = [
        write("c1", "k", 1, 0, 10),
        write("c2", "k", 2, 2, 3),  # concurrent with write 1, so 1 may have landed last
        write("c3", "k", 3, 20, None),  # unknown: may land any time after 20, or never
        write("c4", "k", 4, 30, 31),
    ]
    assert lost_writes(ops, {"k": 3}) == {}
    assert lost_writes(ops, {"k": 1}) == {"k": [ops[3]]}
    # a final value nobody wrote (here: the initial one) loses every acknowledged write
    assert lost_writes(ops, {"k": None}) == {"k": [ops[0], ops[1], ops[3]]}
    assert check_history(ops, final={"k": None}).verdict is NOT
