"""The peering transition table (cluster/state/transitions.py), tried whole through the FSM:
every (state, event) pair, as the command that carries the event. A pair in the table moves
the peering to the table's state; a pair missing from it is refused and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.fsm import FSM, encode
from cluster.state import transitions as t

P = "default"
AT = "2026-01-02T03:04:05.000000006Z"
# Who a peering is, per event: acceptor events on an acceptor, dialer events on a dialer.
DIALER_EVENTS = {t.ESTABLISH_REQUESTED, t.SECRET_EXCHANGED, t.ADDRESSES_RECEIVED}


def run(f: FSM, **cmd: Any) -> dict[str, Any]:
    return f.apply(encode(cmd))


def create(f: FSM, dialer: bool) -> None:
    if dialer:
        res = run(f, op="establish", Partition=P, Name="p", ID="pid", PeerID="acc",
                  PeerServerAddresses=["10.0.0.1:8503"], PeerServerName="s", PeerCAPems=[])
    else:
        res = run(f, op="generate_token", Partition=P, Name="p", ID="pid",
                  EstablishmentSecret="est")
    assert "error" not in res, res


def event(f: FSM, name: str) -> dict[str, Any]:
    return run(f, op="peering_event", ID="pid", Event=name)


def in_state(state: str, dialer: bool) -> FSM:
    """A fresh FSM holding peering `p` (ID pid) in `state`, reached through the table."""
    f = FSM()
    if state == t.ABSENT:
        return f
    create(f, dialer)
    steps = {
        t.PENDING: [],
        t.ESTABLISHING: [t.SECRET_EXCHANGED],
        t.ACTIVE: [t.STREAM_OPEN],
        t.FAILING: [t.STREAM_OPEN, t.STREAM_FAILED],
        t.TERMINATED: [t.TERMINATED_BY_PEER],
    }
    for step in steps.get(state, []):
        assert "error" not in event(f, step)
    if state == t.DELETING:
        assert run(f, op="delete", Partition=P, Name="p", DeletedAt=AT)["changed"]
    assert current(f) == state
    return f


def current(f: FSM) -> str:
    rec = f.by_id("pid")
    return rec["State"] if rec else t.ABSENT


def carry(f: FSM, name: str) -> dict[str, Any]:
    """Apply the command that carries event `name`."""
    if name == t.TOKEN_GENERATED:
        return run(f, op="generate_token", Partition=P, Name="p", ID="pid",
                   EstablishmentSecret="est-2")
    if name == t.ESTABLISH_REQUESTED:
        return run(f, op="establish", Partition=P, Name="p", ID="pid", PeerID="acc",
                   PeerServerAddresses=["10.0.0.2:8503"], PeerServerName="s", PeerCAPems=[])
    if name == t.ESTABLISHMENT_SECRET_USED:
        return run(f, op="exchange_secret", ID="pid", EstablishmentSecret="est",
                   PendingStreamSecret="stream")
    if name == t.DELETE_REQUESTED:
        return run(f, op="delete", Partition=P, Name="p", DeletedAt=AT)
    if name == t.REMOVED:
        return run(f, op="remove", ID="pid")
    return event(f, name)


PAIRS = [(s, e) for s in t.STATES for e in t.EVENTS]
LEGAL = [p for p in PAIRS if p in t.TRANSITIONS]
ILLEGAL = [p for p in PAIRS if p not in t.TRANSITIONS]


def test_the_table_names_only_known_states_and_events():
    assert {s for s, _ in t.TRANSITIONS} | set(t.TRANSITIONS.values()) <= set(t.STATES)
    assert {e for _, e in t.TRANSITIONS} == set(t.EVENTS)
    assert len(LEGAL) + len(ILLEGAL) == len(t.STATES) * len(t.EVENTS)


@pytest.mark.parametrize("state,name", ILLEGAL, ids=lambda v: v)
def test_every_illegal_transition_is_refused_and_changes_nothing(state, name):
    f = in_state(state, dialer=name in DIALER_EVENTS)
    before, index = f.snapshot(), f.index
    res = carry(f, name)
    assert set(res) == {"error", "kind"}, res
    assert f.snapshot() == before and f.index == index


@pytest.mark.parametrize("state,name", LEGAL, ids=lambda v: v)
def test_every_legal_transition_reaches_the_tables_state(state, name):
    f = in_state(state, dialer=name in DIALER_EVENTS)
    res = carry(f, name)
    assert "error" not in res, res
    assert current(f) == t.TRANSITIONS[state, name]


def test_a_deleting_peering_refuses_a_new_token_with_consuls_text():
    f = in_state(t.DELETING, dialer=False)
    assert carry(f, t.TOKEN_GENERATED) == {
        "error": "failed to write peering: cannot write to peering that is marked for deletion",
        "kind": "conflict",
    }


def test_a_set_state_from_an_older_journal_is_read_as_the_event_its_writer_meant():
    f = in_state(t.PENDING, dialer=True)
    assert "error" not in run(f, op="set_state", ID="pid", State="ACTIVE",
                              expect_states=list(t.LIVE))
    assert current(f) == t.ACTIVE
    assert "error" not in run(f, op="set_state", ID="pid", State="ACTIVE",
                              expect_states=["ACTIVE"], PeerServerAddresses=["10.0.0.9:8503"])
    assert f.by_id("pid")["PeerServerAddresses"] == ["10.0.0.9:8503"]
    assert "error" not in run(f, op="set_state", ID="pid", State="TERMINATED")
    assert current(f) == t.TERMINATED
    before = f.snapshot()
    assert run(f, op="set_state", ID="pid", State="DELETING")["kind"] == "invalid"
    assert f.snapshot() == before
