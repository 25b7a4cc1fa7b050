"""Replication sessions end to end without processes: two real FSMs (each with its catalog and
config tables), one session per side, connected by an in-memory stream that carries every frame
through msgpack as the websocket does. Commands go to `FSM.apply` as Raft would deliver them.

The protocol (cluster/peering/): subscriptions, per-stream nonces, ACK/NACK, full snapshots,
the service list pruning what is no longer exported, and that bad messages never wedge it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cluster.commands import encode
from cluster.fsm import FSM
from cluster.peering import resources as r
from cluster.peering.catalog_port import FSMCatalog
from cluster.peering.importer import ApplyFailed
from cluster.peering.peerstream import pack, unpack
from cluster.peering.replication import Replication


class End:
    """One end of an in-memory peer stream (the part of LiveStream a session uses)."""

    def __init__(self, peering_id: str, role: str) -> None:
        self.peering_id, self.role = peering_id, role
        self.status: dict[str, Any] = {"ImportedServices": [], "ExportedServices": []}
        self.on_frame: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.other: End | None = None
        self.sent: list[dict[str, Any]] = []
        self.inbox: list[dict[str, Any]] = []  # arrived before a session read them

    async def send(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)
        assert self.other is not None
        self.other.inbox.append(unpack(pack(frame)))
        await self.other.deliver()

    async def deliver(self) -> None:
        while self.on_frame is not None and self.inbox:
            await self.on_frame(self.inbox.pop(0))


class Side:
    def __init__(self, local_name: str, role: str) -> None:
        self.fsm = FSM()
        self.id = str(uuid.uuid4())
        self.apply({"op": "generate_token", "Partition": "default", "Name": local_name,
                    "ID": self.id, "EstablishmentSecret": str(uuid.uuid4())})
        self.name = local_name
        self.end = End(self.id, role)
        self.addresses: list[list[str]] = []
        self.fail_next: list[str] = []  # codes: the next proposals fail with these
        self.repl = Replication(self.fsm, FSMCatalog(self.fsm), self.submit, self.set_addresses)
        # as the agent wires it: what each apply touched (the tests apply on the event loop)
        self.fsm.subscribe(lambda _index, touched: self.repl.on_change(touched))

    def apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        res = self.fsm.apply(encode(cmd))
        assert "error" not in res, res
        return res

    async def submit(self, cmd: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.fail_next and cmd.op.startswith("catalog_import"):
            raise_code = self.fail_next.pop(0)
            if raise_code == "unknown":
                from cluster.raft import UnknownOutcome
                raise UnknownOutcome("timed out")
            raise ApplyFailed(raise_code, "refused for the test")
        return self.fsm.apply(encode(cmd))

    async def set_addresses(self, pid: str, addrs: list[str]) -> None:
        self.addresses.append(addrs)

    def change(self, cmd: dict[str, Any]) -> None:
        """A local write (the FSM's subscriber tells the exporter what it touched)."""
        self.apply(cmd)

    def register(self, node: str, sid: str, status: str = "passing", port: int = 80,
                 service: str = "web") -> None:
        self.change({"op": "catalog_register",
                     "Node": {"Node": node, "Address": f"10.0.0.{len(node)}"},
                     "Service": {"ID": sid, "Service": service, "Port": port, "Tags": ["v1"]},
                     "Checks": [{"CheckID": f"{sid}-http", "Name": "http", "Status": status,
                                 "ServiceID": sid},
                                {"CheckID": "serfHealth", "Name": "node", "Status": "passing"}]})

    def export(self, *services: str, to: str) -> None:
        self.change({"op": "config_set", "Entry": {
            "Kind": "exported-services", "Name": "default",
            "Services": [{"Name": s, "Consumers": [{"Peer": to}]} for s in services]}})

    def imported(self, service: str, peer: str) -> list[tuple[dict, dict, list[dict]]]:
        return self.fsm.catalog.health(service, peer)[0]


async def connect(acceptor: Side, dialer: Side) -> None:
    acceptor.end.other, dialer.end.other = dialer.end, acceptor.end
    await acceptor.repl.attach(acceptor.end)
    await dialer.repl.attach(dialer.end)
    await acceptor.end.deliver()
    await settle(acceptor, dialer)


async def settle(*sides: Side, timeout: float = 5.0) -> None:
    """Until every response was answered on both sides (and nothing is queued)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    quiet = 0
    while quiet < 5:
        await asyncio.sleep(0.01)
        busy = any(s.end.status.get("ExportUnacked") or s.end.status.get("ImportPending")
                   for s in sides)
        quiet = 0 if busy else quiet + 1
        assert loop.time() < end, [s.end.status for s in sides]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until `check()` holds, for what settle() cannot see (a pass the exporter retries after a
    pause leaves nothing unacked or pending meanwhile)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "not within the timeout"
        await asyncio.sleep(0.01)


async def close(*sides: Side) -> None:
    for s in sides:
        for session in list(s.repl.sessions):
            await s.repl.detach(session)


@pytest.fixture
def pair():
    # dc1 exports to its peering "dc2"; dc2 knows the same peering as "dc1"
    return Side("dc2", "acceptor"), Side("dc1", "dialer")


def responses(end: End, url: str = r.URL_SERVICE) -> list[dict[str, Any]]:
    return [f for f in end.sent if f["Type"] == r.RESPONSE and f["ResourceURL"] == url]


def answers(end: End) -> list[dict[str, Any]]:
    return [f for f in end.sent if f["Type"] == r.REQUEST and f.get("ResponseNonce")]


async def test_exported_service_is_imported_with_the_peering_name_and_one_overall_check(pair):
    dc1, dc2 = pair
    dc1.register("node-a", "web-1")
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    [(node, svc, checks)] = dc2.imported("web", "dc1")
    assert node["Node"] == "node-a" and node["PeerName"] == "dc1"
    assert svc["ID"] == "web-1" and svc["Port"] == 80 and svc["PeerName"] == "dc1"
    assert [(c["CheckID"], c["Status"], c["PeerName"]) for c in checks] == [
        ("web-1:overall-check", "passing", "dc1")]
    assert dc2.imported("web", "") == []  # nothing local
    assert dc2.end.status["ImportedServices"] == ["web"]
    assert dc1.end.status["ExportedServices"] == ["web"]
    assert dc2.end.status["ImportLastApplied"].endswith("Z")
    await close(dc1, dc2)


async def test_subscriptions_nonces_and_acks(pair):
    dc1, dc2 = pair
    dc1.register("node-a", "web-1")
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    subs = [f["ResourceURL"] for f in dc2.end.sent
            if f["Type"] == r.REQUEST and "ResponseNonce" not in f]
    assert subs == [r.URL_SERVICE, r.URL_SERVICE_LIST, r.URL_SERVER_ADDRESSES]  # the dialer
    sent = [f for f in dc1.end.sent if f["Type"] == r.RESPONSE]
    assert [f["Nonce"] for f in sent] == [f"{i:08x}" for i in range(1, len(sent) + 1)]
    assert sorted(a["ResponseNonce"] for a in answers(dc2.end)) == [f["Nonce"] for f in sent]
    assert not any("Error" in a for a in answers(dc2.end))
    assert dc1.end.status["ExportUnacked"] == 0 and dc1.end.status["LastAck"]
    await close(dc1, dc2)


async def test_instance_check_deregistration_and_unexport_each_propagate(pair):
    dc1, dc2 = pair
    dc1.register("node-a", "web-1")
    dc1.register("node-b", "api-1", service="api")
    dc1.export("web", "api", to="dc2")
    await connect(dc1, dc2)
    dc1.register("node-b", "web-2")
    await settle(dc1, dc2)
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1", "web-2"]
    dc1.register("node-b", "web-2", status="critical")
    await settle(dc1, dc2)
    status = {s["ID"]: c[0]["Status"] for _, s, c in dc2.imported("web", "dc1")}
    assert status == {"web-1": "passing", "web-2": "critical"}
    dc1.change({"op": "catalog_deregister", "Node": "node-a", "ServiceID": "web-1"})
    await settle(dc1, dc2)
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-2"]
    dc1.export("api", to="dc2")  # web no longer exported
    await settle(dc1, dc2)
    assert dc2.imported("web", "dc1") == []
    assert dc2.fsm.catalog.imported_names("dc1") == ["api"]
    assert dc2.end.status["ImportedServices"] == ["api"]
    await close(dc1, dc2)


async def test_an_unchanged_service_is_not_sent_again(pair):
    dc1, dc2 = pair
    dc1.register("node-a", "web-1")
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    before = len(responses(dc1.end))
    dc1.register("node-b", "api-1", service="api")  # not exported
    dc1.register("node-a", "web-1")  # same registration again: no change
    await settle(dc1, dc2)
    assert len(responses(dc1.end)) == before
    await close(dc1, dc2)


async def test_both_directions_at_once(pair):
    dc1, dc2 = pair
    dc1.register("node-a", "web-1")
    dc1.export("web", to="dc2")
    dc2.register("node-z", "db-1", service="db")
    dc2.export("db", to="dc1")
    await connect(dc1, dc2)
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1"]
    assert [s["ID"] for _, s, _ in dc1.imported("db", "dc2")] == ["db-1"]
    await close(dc1, dc2)


@pytest.mark.parametrize("resource, why", [
    ({"Nodes": "x"}, "is not {Nodes"),
    ({"Nodes": [{"Node": {"Node": "n"}, "Service": {"Service": "other"}}]}, "in the snapshot"),
    ({"Nodes": [{"Node": {"Node": "n"}, "Service": {"Service": "web", "Port": "80"}}]},
     "Port is not a port number"),
    ({"Nodes": [{"Node": {"Node": "n"}, "Service": {"Service": "web"},
                 "Checks": [{"CheckID": "c", "Status": "bogus"}]}]}, "is not a check status"),
    ({"Nodes": [{"Node": {"Node": 7}, "Service": {"Service": "web"}}]}, "is not a string"),
])
async def test_a_malformed_service_is_nacked_and_replication_goes_on(pair, resource, why):
    dc1, dc2 = pair
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    await dc1.end.send(r.response("ffff0001", r.URL_SERVICE, "web", resource))
    await settle(dc1, dc2)
    [nack] = [a for a in answers(dc2.end) if a["ResponseNonce"] == "ffff0001"]
    assert nack["Error"]["Code"] == r.INVALID_ARGUMENT and why in nack["Error"]["Message"]
    assert dc2.imported("web", "dc1") == []
    dc1.register("node-a", "web-1")  # the next real change still arrives
    await settle(dc1, dc2)
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1"]
    await close(dc1, dc2)


async def test_an_unknown_resource_type_is_nacked(pair):
    dc1, dc2 = pair
    await connect(dc1, dc2)
    await dc1.end.send(r.response("ffff0002", "type.example/Nope", "x", {}))
    await settle(dc1, dc2)
    [nack] = [a for a in answers(dc2.end) if a["ResponseNonce"] == "ffff0002"]
    assert nack["Error"] == {"Code": "InvalidArgument", "Message":
                             "received response for unknown resource type 'type.example/Nope'"}
    await close(dc1, dc2)


@pytest.mark.parametrize("frame", [
    {"Type": "Response", "ResourceURL": r.URL_SERVICE, "ResourceID": "web"},  # no nonce
    {"Type": "Response", "Nonce": 5, "ResourceURL": r.URL_SERVICE},
    {"Type": "Request", "ResourceURL": ["x"]},
    {"Type": "Request", "ResourceURL": r.URL_SERVICE, "ResponseNonce": "00000009",
     "Error": "boom"},
    {"Type": "Request", "ResourceURL": "type.example/Nope"},  # subscription to nothing
    {"Type": "Request", "ResourceURL": r.URL_SERVICE, "ResponseNonce": "0badbad0"},  # stray ack
])
async def test_unusable_frames_are_noted_and_ignored(pair, frame):
    dc1, dc2 = pair
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    await dc1.end.send(frame)
    dc1.register("node-a", "web-1")
    await settle(dc1, dc2)
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1"]
    await close(dc1, dc2)


@pytest.mark.parametrize("failure", [r.UNAVAILABLE, "unknown"])
async def test_a_response_that_could_not_be_applied_is_nacked_and_sent_again(pair, failure):
    dc1, dc2 = pair
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    dc2.fail_next = [failure]
    dc1.register("node-a", "web-1")
    await settle(dc1, dc2)
    nacks = [a for a in answers(dc2.end) if "Error" in a]
    assert [n["Error"]["Code"] for n in nacks] == [r.UNAVAILABLE]
    assert dc1.end.status["LastNackMessage"].startswith(
        "client peer was unable to apply resource: ")
    await asyncio.sleep(0.3)  # the exporter's first resend pause
    await settle(dc1, dc2)
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1"]
    await close(dc1, dc2)


async def test_a_new_stream_resends_everything_and_prunes_what_is_stale(pair):
    dc1, dc2 = pair
    dc1.register("node-a", "web-1")
    dc1.register("node-b", "api-1", service="api")
    dc1.export("web", "api", to="dc2")
    await connect(dc1, dc2)
    await close(dc1, dc2)
    # while no stream is up: api is unexported, web gets a second instance
    dc1.export("web", to="dc2")
    dc1.register("node-c", "web-2")
    dc2.end, dc1.end = End(dc2.id, "dialer"), End(dc1.id, "acceptor")  # a new stream
    await connect(dc1, dc2)
    assert dc2.fsm.catalog.imported_names("dc1") == ["web"]
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1", "web-2"]
    before = dc2.fsm.index
    dc2.end, dc1.end = End(dc2.id, "dialer"), End(dc1.id, "acceptor")  # and again: no change
    await connect(dc1, dc2)
    assert dc2.fsm.index == before  # re-applied snapshots changed nothing
    await close(dc1, dc2)


async def test_the_acceptor_pushes_its_server_addresses_to_the_dialer(pair):
    dc1, dc2 = pair
    dc1.change({"op": "register_server", "RaftAddr": "10.0.0.1:8300", "Node": "s1",
                "HTTPAddr": "10.0.0.1:8500", "PeeringAddr": "10.0.0.1:8503",
                "Datacenter": "dc1"})
    await connect(dc1, dc2)
    assert dc2.addresses == [["10.0.0.1:8503"]]
    assert not dc1.addresses  # the acceptor never subscribes to the dialer's addresses
    dc1.change({"op": "register_server", "RaftAddr": "10.0.0.2:8300", "Node": "s2",
                "HTTPAddr": "10.0.0.2:8500", "PeeringAddr": "10.0.0.2:8503",
                "Datacenter": "dc1"})
    await settle(dc1, dc2)
    assert dc2.addresses[-1] == ["10.0.0.1:8503", "10.0.0.2:8503"]
    await close(dc1, dc2)


async def test_purge_deletes_a_peers_imports_in_bounded_commands(pair, monkeypatch):
    from cluster.peering import replication
    monkeypatch.setattr(replication, "PURGE_BATCH", 7)
    dc1, dc2 = pair
    for i in range(10):
        dc1.register(f"node-{i}", f"web-{i}")
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    await close(dc1, dc2)
    assert dc2.fsm.catalog.record_count("dc1") == 30  # 10 nodes, services, overall checks
    ops: list[Any] = []
    real = dc2.submit

    async def counting(cmd: Any) -> dict[str, Any]:
        ops.append(cmd)
        return await real(cmd)

    dc2.repl.submit = counting
    assert await dc2.repl.purge("dc1") is True
    assert dc2.fsm.catalog.record_count("dc1") == 0 and dc2.imported("web", "dc1") == []
    assert {o.Limit for o in ops} == {7} and len(ops) >= 30 // 7


async def test_an_exporter_or_importer_failure_is_survived(pair, monkeypatch):
    dc1, dc2 = pair
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    calls = {"export": 0, "import": 0}
    real_instances = FSMCatalog.service_instances
    real_command = FSMCatalog.import_command

    def flaky_instances(self, service):
        calls["export"] += 1
        if calls["export"] == 1:
            raise RuntimeError("catalog hiccup")
        return real_instances(self, service)

    def flaky_command(self, pid, peer, service, nodes):
        calls["import"] += 1
        if calls["import"] == 1:
            raise RuntimeError("import hiccup")
        return real_command(self, pid, peer, service, nodes)

    monkeypatch.setattr(FSMCatalog, "service_instances", flaky_instances)
    monkeypatch.setattr(FSMCatalog, "import_command", flaky_command)
    dc1.register("node-a", "web-1")
    # The failed export pass is tried again RESEND_FIRST (0.2 s) after it failed, and nothing is
    # unacked or pending meanwhile, so settle() alone could return before it: wait for the NACK.
    await until(lambda: any("Error" in a for a in answers(dc2.end)))
    await settle(dc1, dc2)
    assert [n["Error"]["Code"] for n in answers(dc2.end) if "Error" in n] == [r.INTERNAL]
    await asyncio.sleep(0.3)  # the NACKed snapshot is sent again
    await settle(dc1, dc2)
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1"]
    await close(dc1, dc2)


async def test_a_resend_due_in_an_export_pass_that_failed_is_sent_after_it(pair, monkeypatch):
    dc1, dc2 = pair
    dc1.export("web", to="dc2")
    await connect(dc1, dc2)
    dc2.fail_next = [r.UNAVAILABLE]
    dc1.register("node-a", "web-1")
    await settle(dc1, dc2)
    assert [n["Error"]["Code"] for n in answers(dc2.end) if "Error" in n] == [r.UNAVAILABLE]
    real_instances = FSMCatalog.service_instances
    failed = []

    def fails_once(self, service):
        if not failed:
            failed.append(service)
            raise RuntimeError("catalog hiccup")
        return real_instances(self, service)

    monkeypatch.setattr(FSMCatalog, "service_instances", fails_once)
    # The resend pass (after RESEND_FIRST) fails; the pass tried after that must still send it.
    await until(lambda: bool(dc2.imported("web", "dc1")))
    await settle(dc1, dc2)
    assert failed == ["web"]
    assert [s["ID"] for _, s, _ in dc2.imported("web", "dc1")] == ["web-1"]
    await close(dc1, dc2)


async def test_a_snapshot_over_the_message_limit_is_skipped_and_the_rest_flows(pair, monkeypatch):
    from cluster.peering import replication
    monkeypatch.setattr(replication, "MAX_FRAME", 1024 + 900)
    dc1, dc2 = pair
    for i in range(6):
        dc1.register(f"node-{i}", f"web-{i}")
    dc1.register("node-a", "api-1", service="api")
    dc1.export("web", "api", to="dc2")
    await connect(dc1, dc2)
    assert "'web' is" in dc1.end.status["LastSendError"]
    assert dc2.imported("web", "dc1") == []
    assert [s["ID"] for _, s, _ in dc2.imported("api", "dc1")] == ["api-1"]
    await close(dc1, dc2)


@pytest.mark.parametrize("event", ["delete", "terminate"])
def test_an_import_for_a_peering_no_longer_live_is_refused(pair, event):
    """An import proposed just before a deletion must not land after the purge of the imports."""
    _, dc2 = pair
    port = FSMCatalog(dc2.fsm)
    nodes = [{"Node": {"Node": "n1"}, "Service": {"ID": "web-1", "Service": "web"}}]
    assert "error" not in dc2.fsm.apply(encode(port.import_command(dc2.id, "dc1", "web", nodes)))
    assert "error" in dc2.fsm.apply(encode(port.import_command(dc2.id, "other", "web", nodes)))
    if event == "delete":
        dc2.apply({"op": "delete", "Partition": "default", "Name": "dc1",
                   "DeletedAt": "2026-12-01T00:00:00Z"})
    else:
        dc2.apply({"op": "peering_event", "ID": dc2.id, "Event": "terminated_by_peer"})
    before = dc2.fsm.index
    for cmd in (port.import_command(dc2.id, "dc1", "api", nodes),
                port.prune_command(dc2.id, "dc1", [])):
        res = dc2.fsm.apply(encode(cmd))
        assert res == {"error": "no live peering to import into", "kind": "conflict"}
    assert dc2.fsm.index == before and dc2.fsm.catalog.imported_names("dc1") == ["web"]


async def test_a_change_makes_the_exporter_look_at_that_service_only(pair, monkeypatch):
    dc1, dc2 = pair
    names = [f"svc-{i}" for i in range(50)]
    for i, name in enumerate(names):
        dc1.register(f"node-{i}", f"{name}-1", service=name)
    dc1.export(*names, to="dc2")
    await connect(dc1, dc2)
    looked: list[str] = []
    real = FSMCatalog.service_index

    def counting(self, service):
        looked.append(service)
        return real(self, service)

    monkeypatch.setattr(FSMCatalog, "service_index", counting)
    dc1.register("node-7", "svc-7-2", service="svc-7")
    dc1.register("node-x", "other-1", service="other")  # not exported
    await settle(dc1, dc2)
    assert looked == ["svc-7"]
    assert len(dc2.imported("svc-7", "dc1")) == 2
    await close(dc1, dc2)


async def test_an_entry_exporting_star_exports_every_local_service(pair):
    dc1, dc2 = pair
    dc1.register("node-a", "web-1")
    dc1.export("*", to="dc2")
    await connect(dc1, dc2)
    assert dc2.fsm.catalog.imported_names("dc1") == ["web"]
    dc1.register("node-b", "api-1", service="api")  # a new name: the list grows
    await settle(dc1, dc2)
    assert dc2.fsm.catalog.imported_names("dc1") == ["api", "web"]
    assert dc2.end.status["ImportedServices"] == ["api", "web"]
    dc1.change({"op": "catalog_deregister", "Node": "node-a", "ServiceID": "web-1"})
    await settle(dc1, dc2)  # web is gone from dc1: no longer exported, no longer imported
    assert dc2.fsm.catalog.imported_names("dc1") == ["api"]
    assert dc2.end.status["ImportedServices"] == ["api"]
    await close(dc1, dc2)


async def test_a_flood_of_responses_is_nacked_beyond_the_queue_limit(pair, monkeypatch):
    from cluster.peering import importer
    monkeypatch.setattr(importer, "MAX_QUEUED", 3)
    dc1, dc2 = pair
    await connect(dc1, dc2)
    snap = {"Nodes": []}
    for i in range(6):  # delivered in one go: nothing is applied in between
        dc2.end.inbox.append(r.response(f"fff0000{i}", r.URL_SERVICE, f"s{i}", snap))
    await dc2.end.deliver()
    await settle(dc1, dc2)
    codes = {a["ResponseNonce"]: a.get("Error", {}).get("Code") for a in answers(dc2.end)
             if a["ResponseNonce"].startswith("fff")}
    assert codes == {f"fff0000{i}": None if i < 3 else r.UNAVAILABLE for i in range(6)}
    await close(dc1, dc2)
