"""The state machine of one peering: (state, event) -> next state, and nothing else.

Every command that touches a peering's State goes through `next_state`; callers say what
happened (an event), never which state to write or expect. A pair missing from the table is
refused and changes nothing. ABSENT stands for "no such peering" (before creation, after
removal). Consul's states (pbpeering.PeeringState): an acceptor is PENDING until a dialer's
stream is up; a dialer is ESTABLISHING once the secret exchange gave it a stream secret; both
are ACTIVE while a stream is up, FAILING when it broke (or no heartbeat came for the
timeout), TERMINATED when the other side deleted its end, DELETING until the leader removes
the record (after sending Terminated).
"""

from __future__ import annotations

from ..commands import CommandError

ABSENT = "ABSENT"
PENDING = "PENDING"
ESTABLISHING = "ESTABLISHING"
ACTIVE = "ACTIVE"
FAILING = "FAILING"
DELETING = "DELETING"
TERMINATED = "TERMINATED"

STATES = (ABSENT, PENDING, ESTABLISHING, ACTIVE, FAILING, DELETING, TERMINATED)
LIVE = (PENDING, ESTABLISHING, ACTIVE, FAILING)  # a stream may be up or wanted

# Events: what a caller saw.
TOKEN_GENERATED = "token_generated"  # acceptor: POST /v1/peering/token
ESTABLISH_REQUESTED = "establish_requested"  # dialer: POST /v1/peering/establish (the record)
SECRET_EXCHANGED = "secret_exchanged"  # dialer: the acceptor traded the token for a stream secret
ESTABLISHMENT_SECRET_USED = "establishment_secret_used"  # acceptor: the same exchange, its side
STREAM_OPEN = "stream_open"  # either side: a stream is up and authenticated
STREAM_FAILED = "stream_failed"  # a stream broke or was refused for good
HEARTBEAT_TIMEOUT = "heartbeat_timeout"  # no stream for the heartbeat timeout (re-verification)
TERMINATED_BY_PEER = "terminated_by_peer"  # the other side sent Terminated (or forgot us)
ADDRESSES_RECEIVED = "addresses_received"  # dialer: the acceptor pushed its server addresses
DELETE_REQUESTED = "delete_requested"  # DELETE /v1/peering/:name
REMOVED = "removed"  # the leader's deletion routine, after Terminated was sent

EVENTS = (TOKEN_GENERATED, ESTABLISH_REQUESTED, SECRET_EXCHANGED, ESTABLISHMENT_SECRET_USED,
          STREAM_OPEN, STREAM_FAILED, HEARTBEAT_TIMEOUT, TERMINATED_BY_PEER, ADDRESSES_RECEIVED,
          DELETE_REQUESTED, REMOVED)


def _rows() -> dict[tuple[str, str], str]:
    t: dict[tuple[str, str], str] = {}
    for event in (TOKEN_GENERATED, ESTABLISH_REQUESTED):
        # (Re)creating: a new record is PENDING; a live one keeps its state (an active stream
        # survives a regenerated token); a TERMINATED one is invited back.
        t[ABSENT, event] = PENDING
        t[TERMINATED, event] = PENDING
        for s in LIVE:
            t[s, event] = s
    for s in LIVE:
        t[s, SECRET_EXCHANGED] = ESTABLISHING
        t[s, ESTABLISHMENT_SECRET_USED] = s
        t[s, STREAM_OPEN] = ACTIVE
        t[s, TERMINATED_BY_PEER] = TERMINATED
        t[s, ADDRESSES_RECEIVED] = s
    for s in (PENDING, ESTABLISHING, ACTIVE):
        t[s, STREAM_FAILED] = FAILING
        t[s, HEARTBEAT_TIMEOUT] = FAILING
    for s in (*LIVE, TERMINATED):
        t[s, DELETE_REQUESTED] = DELETING
    # Deleting nothing, or twice, and removing nothing are no-ops (same state, no index bump).
    t[ABSENT, DELETE_REQUESTED] = ABSENT
    t[DELETING, DELETE_REQUESTED] = DELETING
    t[DELETING, REMOVED] = ABSENT
    t[ABSENT, REMOVED] = ABSENT
    return t


TRANSITIONS: dict[tuple[str, str], str] = _rows()

# Why a pair is refused, in Consul's words where Consul has them.
_DELETING_TEXT = "cannot write to peering that is marked for deletion"


def next_state(state: str, event: str) -> str:
    """The state after `event`, or CommandError when the table has no such transition."""
    to = TRANSITIONS.get((state, event))
    if to is not None:
        return to
    if event not in EVENTS:
        raise CommandError(f"unknown peering event {event!r}")
    if state == ABSENT:
        raise CommandError("unknown peering", "not_found")
    if state == DELETING:
        if event in (TOKEN_GENERATED, ESTABLISH_REQUESTED):
            raise CommandError(f"failed to write peering: {_DELETING_TEXT}", "conflict")
        raise CommandError(_DELETING_TEXT, "conflict")
    if event == REMOVED:
        raise CommandError("cannot delete a peering without first marking for deletion")
    raise CommandError(f"peering is {state}", "conflict")
