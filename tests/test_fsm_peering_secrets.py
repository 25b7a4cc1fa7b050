"""The FSM's secret lifecycle and state preconditions (pure; no processes)."""

from __future__ import annotations

from cluster.fsm import FSM, encode


def apply(fsm: FSM, **cmd) -> dict:
    return fsm.apply(encode(cmd))


def acceptor(fsm: FSM, secret: str = "est-1") -> str:
    res = apply(fsm, op="generate_token", Partition="", Name="p", ID="acc-id",
                EstablishmentSecret=secret)
    assert "error" not in res, res
    return "acc-id"


def dialer(fsm: FSM) -> str:
    res = apply(fsm, op="establish", Partition="", Name="d", ID="dial-id", PeerID="acc-id",
                PeerServerAddresses=["127.0.0.1:1"], PeerServerName="s", PeerCAPems=[])
    assert "error" not in res, res
    return "dial-id"


def test_exchange_is_single_use_and_the_second_of_two_concurrent_loses():
    fsm = FSM()
    pid = acceptor(fsm)
    one = apply(fsm, op="exchange_secret", ID=pid, EstablishmentSecret="est-1",
                PendingStreamSecret="s1")
    two = apply(fsm, op="exchange_secret", ID=pid, EstablishmentSecret="est-1",
                PendingStreamSecret="s2")
    assert "error" not in one
    assert two["kind"] == "permission" and "already established" in two["error"]
    assert fsm.secrets_for(pid) == {"pending": "s1"}


def test_superseded_and_wrong_secrets_are_refused():
    fsm = FSM()
    pid = acceptor(fsm, "old")
    acceptor(fsm, "new")  # regenerating replaces the unused establishment secret
    res = apply(fsm, op="exchange_secret", ID=pid, EstablishmentSecret="old",
                PendingStreamSecret="s")
    assert res["kind"] == "permission"
    res = apply(fsm, op="exchange_secret", ID="nope", EstablishmentSecret="new",
                PendingStreamSecret="s")
    assert res["kind"] == "permission"
    assert fsm.secrets_for(pid) == {"establishment": "new"}


def test_exchange_refused_for_a_dialer_or_deleted_peering():
    fsm = FSM()
    did = dialer(fsm)
    res = apply(fsm, op="exchange_secret", ID=did, EstablishmentSecret="x",
                PendingStreamSecret="s")
    assert res["kind"] == "permission"
    pid = acceptor(fsm)
    apply(fsm, op="delete", Partition="", Name="p", DeletedAt="2024-01-01T00:00:00Z")
    res = apply(fsm, op="exchange_secret", ID=pid, EstablishmentSecret="est-1",
                PendingStreamSecret="s")
    assert res["kind"] == "permission"


def test_promotion_keeps_old_active_valid_until_the_new_one_is_used():
    fsm = FSM()
    pid = acceptor(fsm)
    apply(fsm, op="exchange_secret", ID=pid, EstablishmentSecret="est-1",
          PendingStreamSecret="s1")
    res = apply(fsm, op="peering_event", ID=pid, Event="stream_open", PromoteStreamSecret="s1",
                Remote={"Partition": "", "Datacenter": "dc2"}, expect_secret="s1")
    assert "error" not in res
    assert fsm.secrets_for(pid) == {"active": "s1"}
    assert fsm.by_id(pid)["Remote"]["Datacenter"] == "dc2"
    # re-establish: a new token and exchange; the old active secret still authenticates
    acceptor(fsm, "est-2")
    apply(fsm, op="exchange_secret", ID=pid, EstablishmentSecret="est-2",
          PendingStreamSecret="s2")
    assert fsm.secrets_for(pid) == {"active": "s1", "pending": "s2"}
    res = apply(fsm, op="peering_event", ID=pid, Event="stream_open", expect_secret="s1")
    assert "error" not in res
    res = apply(fsm, op="peering_event", ID=pid, Event="stream_open",
                PromoteStreamSecret="bogus")
    assert res["kind"] == "permission"


def test_peering_event_preconditions_and_no_op_writes():
    fsm = FSM()
    did = dialer(fsm)
    res = apply(fsm, op="peering_event", ID=did, Event="secret_exchanged",
                ActiveStreamSecret="s")
    assert "error" not in res and fsm.secrets_for(did) == {"active": "s"}
    index = fsm.index
    res = apply(fsm, op="peering_event", ID=did, Event="secret_exchanged")
    assert fsm.index == index and "changed" not in res  # nothing changed, nothing bumped
    res = apply(fsm, op="peering_event", ID=did, Event="stream_open", expect_secret="old")
    assert res["kind"] == "permission"
    apply(fsm, op="peering_event", ID=did, Event="terminated_by_peer")
    assert fsm.secrets_for(did) == {}
    res = apply(fsm, op="peering_event", ID=did, Event="stream_open")
    assert res["kind"] == "conflict" and fsm.by_id(did)["State"] == "TERMINATED"


def test_server_addresses_update_the_dialer_only():
    fsm = FSM()
    did = dialer(fsm)
    apply(fsm, op="peering_event", ID=did, Event="addresses_received",
          PeerServerAddresses=["10.0.0.1:8503"])
    assert fsm.by_id(did)["PeerServerAddresses"] == ["10.0.0.1:8503"]
    assert fsm.by_id(did)["ManualServerAddresses"] == []
    pid = acceptor(fsm)
    apply(fsm, op="peering_event", ID=pid, Event="addresses_received",
          PeerServerAddresses=["10.0.0.1:8503"])
    assert "PeerServerAddresses" not in fsm.by_id(pid)


def test_replicas_agree_after_the_same_commands():
    a, b = FSM(), FSM()
    for fsm in (a, b):
        pid = acceptor(fsm)
        apply(fsm, op="exchange_secret", ID=pid, EstablishmentSecret="est-1",
              PendingStreamSecret="s1")
        apply(fsm, op="peering_event", ID=pid, Event="stream_open", PromoteStreamSecret="s1")
    assert a.snapshot() == b.snapshot()
