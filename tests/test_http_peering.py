"""Consul's own HTTP peering tests, ported to a real three-server cluster.

Sources: `agent/peering_endpoint_test.go` (TestHTTP_Peering_*) and the cases of
`agent/rpc/peering/service_test.go` that can be seen over HTTP (reference §7.1, §7.3), with the
contract decisions of DESIGN.md: validation failures are 400 with Consul's text (no `rpc error`
wrapping), `Partition` is always present, establish only validates and writes a PENDING record.
Every assertion is on the exact status, body and the headers that matter.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from cryptography import x509

from lab.cluster import Agent, LocalCluster, eventually
from lab.http import Reply

pytestmark = pytest.mark.integration

NULL_STREAM = {
    "ImportedServices": None,
    "ExportedServices": None,
    "LastHeartbeat": None,
    "LastReceive": None,
    "LastSend": None,
}
NO_REMOTE = {"Partition": "", "Datacenter": ""}
# A new dialer is written PENDING; once establish trades the secret with the acceptor (peer
# stream issue) it is ESTABLISHING, then ACTIVE when the leader's stream is up. The tests here
# hold either way; the stream's own behaviour is tested in test_peering_stream.py.
DIALER_STATES = ("PENDING", "ESTABLISHING", "ACTIVE")
ACCEPTOR_KEYS = ["ID", "Name", "Partition", "Meta", "State", "StreamStatus", "CreateIndex",
                 "ModifyIndex", "Remote"]
DIALER_KEYS = ["ID", "Name", "Partition", "Meta", "State", "PeerID", "PeerCAPems",
               "PeerServerName", "PeerServerAddresses", "StreamStatus", "CreateIndex",
               "ModifyIndex", "Remote"]
TOKEN_KEYS = ["CA", "ManualServerAddresses", "ServerAddresses", "ServerName", "PeerID",
              "EstablishmentSecret", "Remote"]
NAME_RULE = (
    "a valid peering name must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
SAME_CLUSTER = (
    'cannot create a peering within the same cluster "{}". Refer to the `exported-services` '
    "documentation if you want to export between partitions without peering"
)
MARKED_FOR_DELETION = (
    "failed to write peering: cannot write to peering that is marked for deletion"
)
NOT_A_ROUTE = "Invalid URL path: not a recognized HTTP API endpoint\n"
SERVER_NAME = re.compile(
    r"^server\.dc1\.peering\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"\.consul$"
)
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")
ONE_MIB = 1 << 20

_seq = itertools.count(1)


def fresh(prefix: str) -> str:
    """A peer name no other test of this module uses (the cluster is shared)."""
    return f"{prefix}-{next(_seq)}"


@pytest.fixture(scope="module")
def dc2(tmp_path_factory: pytest.TempPathFactory):
    """A second cluster: establish needs a token from another cluster (trust domain)."""
    with LocalCluster(str(tmp_path_factory.mktemp("dc2")), datacenter="dc2") as c:
        yield c


# ---- helpers ----


def decode(token: str) -> dict:
    return json.loads(base64.b64decode(token))


def encode(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def generate(agent: Agent, name: str, **body: object) -> tuple[str, dict]:
    reply = agent.call("POST", "/v1/peering/token", {"PeerName": name, **body})
    assert reply.status == 200, reply.text
    assert list(reply.json()) == ["PeeringToken"]
    token = reply.json()["PeeringToken"]
    return token, decode(token)


def establish(agent: Agent, name: str, token: str, **body: object) -> Reply:
    return agent.call(
        "POST", "/v1/peering/establish", {"PeerName": name, "PeeringToken": token, **body}
    )


def read(agent: Agent, name: str, query: str = "") -> Reply:
    return agent.call("GET", f"/v1/peering/{name}{query}")


def read_ok(agent: Agent, name: str, query: str = "") -> dict:
    reply = read(agent, name, query)
    assert reply.status == 200, reply.text
    assert_read_headers(reply)
    return reply.json()


def assert_error(reply: Reply, status: int, text: str) -> None:
    """Consul's errors: plain text, exact message, never an index."""
    assert (reply.status, reply.text) == (status, text)
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["X-Consul-Default-ACL-Policy"] == "allow"
    assert "X-Consul-Index" not in reply.headers


def assert_write_headers(reply: Reply) -> None:
    assert reply.headers["X-Consul-Default-ACL-Policy"] == "allow"
    assert "X-Consul-Index" not in reply.headers


def assert_read_headers(reply: Reply) -> None:
    h = reply.headers
    assert h["Content-Type"] == "application/json"
    assert h["X-Consul-Default-ACL-Policy"] == "allow"
    assert int(h["X-Consul-Index"]) >= 1
    assert h["X-Consul-KnownLeader"] == "true"
    assert h["X-Consul-LastContact"].isdigit()
    assert h["X-Consul-Query-Backend"] == "blocking-query"
    assert h["X-Consul-Effective-Consistency"] == "leader"


def peering_addresses(c: LocalCluster) -> list[str]:
    return sorted(f"127.0.0.1:{a.peering_port}" for a in c.agents)


def acceptor_view(name: str, rec: dict, meta: dict | None = None) -> dict:
    """What GET shows for a freshly generated, never dialled token (ID/indexes from rec)."""
    out = {"ID": rec["ID"], "Name": name, "Partition": rec["Partition"]}
    if meta:
        out["Meta"] = meta
    out.update(State="PENDING", StreamStatus=NULL_STREAM, CreateIndex=rec["CreateIndex"],
               ModifyIndex=rec["ModifyIndex"], Remote=NO_REMOTE)
    return out


# ---- TestHTTP_Peering_GenerateToken ----


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param(None, "Body decoding failed: EOF", id="no-body"),
        pytest.param(b"  \n", "Body decoding failed: EOF", id="blank-body"),
        pytest.param(
            b"abc", "Body decoding failed: invalid character 'a' looking for beginning of value",
            id="body-invalid",
        ),
        pytest.param(b'{"PeerName":', "Body decoding failed: unexpected EOF", id="truncated"),
        pytest.param(
            b"{}", "PeerName is required in the payload when generating a new peering token.",
            id="no-name",
        ),
        pytest.param(
            b'{"PeerName":null}',
            "PeerName is required in the payload when generating a new peering token.",
            id="null-name",
        ),
        pytest.param(
            b'{"PeerName":"x","Foo":1}', 'Body decoding failed: json: unknown field "Foo"',
            id="unknown-field",
        ),
        pytest.param(
            b'{"PeerName":"x","Datacenter":"dc1"}',
            'Body decoding failed: json: unknown field "Datacenter"', id="1.12-preview-field",
        ),
        pytest.param(
            b'{"PeerName":5}',
            "Body decoding failed: json: cannot unmarshal number into Go struct field "
            "PeeringGenerateTokenRequest.PeerName of type string",
            id="wrong-type",
        ),
        pytest.param(
            b"[]",
            "Body decoding failed: json: cannot unmarshal array into Go value of type "
            "api.PeeringGenerateTokenRequest",
            id="not-an-object",
        ),
    ],
)
def test_generate_token_rejects_bad_bodies_on_every_node(cluster, raw, text):
    for agent in cluster.agents:
        reply = agent.call("POST", "/v1/peering/token", raw=raw)
        assert_error(reply, 400, text)


def test_generate_token_success_token_contents_and_stored_peering(cluster):
    name = fresh("peering-a")
    follower = cluster.followers()[0]
    reply = follower.call("POST", "/v1/peering/token", {"PeerName": name, "Meta": {"env": "prod"}})
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    assert_write_headers(reply)
    body = reply.json()
    assert list(body) == ["PeeringToken"]
    assert reply.text == json.dumps(body, separators=(",", ":"))

    tok = decode(body["PeeringToken"])
    assert list(tok) == TOKEN_KEYS
    assert isinstance(tok["CA"], list) and len(tok["CA"]) == 1
    for pem in tok["CA"]:
        assert pem.startswith("-----BEGIN CERTIFICATE-----\n") and pem.endswith("\n")
        cert = x509.load_pem_x509_certificate(pem.encode())
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert tok["ManualServerAddresses"] is None
    assert tok["ServerAddresses"] == peering_addresses(cluster)
    assert SERVER_NAME.match(tok["ServerName"]), tok["ServerName"]
    assert uuid.UUID(tok["EstablishmentSecret"]).version == 4
    assert tok["Remote"] == {"Partition": "default", "Datacenter": "dc1", "Locality": None}

    rec = read_ok(cluster.agents[0], name)
    assert tok["PeerID"] == rec["ID"]
    assert uuid.UUID(rec["ID"]).version == 4
    assert list(rec) == ACCEPTOR_KEYS
    assert rec == acceptor_view(name, rec, {"env": "prod"})
    assert rec["CreateIndex"] == rec["ModifyIndex"] >= 1


def test_tokens_from_every_node_carry_the_same_cluster_identity(cluster):
    toks = [generate(a, fresh("ident"))[1] for a in cluster.agents]
    assert len({t["ServerName"] for t in toks}) == 1
    assert len({tuple(t["CA"]) for t in toks}) == 1
    assert all(t["ServerAddresses"] == peering_addresses(cluster) for t in toks)
    assert len({t["PeerID"] for t in toks}) == 3
    assert len({t["EstablishmentSecret"] for t in toks}) == 3


def test_generate_token_accepts_lowercase_keys(cluster):
    name = fresh("lower-keys")
    reply = cluster.agents[1].call(
        "POST", "/v1/peering/token",
        {"peername": name, "meta": {"a": "b"}, "serverexternaladdresses": ["10.0.0.9:8503"],
         "PARTITION": "default"},
    )
    assert reply.status == 200, reply.text
    tok = decode(reply.json()["PeeringToken"])
    assert tok["ManualServerAddresses"] == ["10.0.0.9:8503"]
    assert read_ok(cluster.agents[2], name)["Meta"] == {"a": "b"}


@pytest.mark.parametrize("external", [["32.1.2.3"], ["32.1.2.3:8502", "lb.example.com:443"]])
def test_generate_token_with_external_addresses(cluster, external):
    _, tok = generate(cluster.agents[2], fresh("external"), ServerExternalAddresses=external)
    # Taken verbatim (validated by the dialer); ServerAddresses unchanged (Consul >= 1.14).
    assert tok["ManualServerAddresses"] == external
    assert tok["ServerAddresses"] == peering_addresses(cluster)


def test_generate_token_twice_keeps_the_peering_and_renews_the_secret(cluster):
    """TestHTTP_Peering_GenerateToken_EdgeCases + TestPeeringService_GenerateToken."""
    name = fresh("edge")
    leader, follower = cluster.leader(), cluster.followers()[0]
    _, first = generate(leader, name, Meta={"round": "one"})
    before = read_ok(follower, name)
    assert before["State"] == "PENDING"

    _, second = generate(follower, name, Meta={"round": "two"})
    after = read_ok(leader, name)
    assert after["ModifyIndex"] > before["ModifyIndex"]
    # Everything but ModifyIndex is identical: same ID, state, and the *first* Meta.
    assert {**after, "ModifyIndex": None} == {**before, "ModifyIndex": None}
    assert after["Meta"] == {"round": "one"}
    assert first["PeerID"] == second["PeerID"] == before["ID"]
    assert first["EstablishmentSecret"] != second["EstablishmentSecret"]
    assert {**first, "EstablishmentSecret": None} == {**second, "EstablishmentSecret": None}


@pytest.mark.parametrize(
    "name",
    ["UPPER", "Mixed-case", "a" * 64, "-lead", "trail-", "under_score", "dot.ted", "sp ace",
     "nl\n", "--AA--", "caf\u00e9"],
)
def test_invalid_peer_names_are_rejected_by_token_and_establish(cluster, name):
    text = f"{name} is not a valid peer name: {NAME_RULE}"
    agent = cluster.agents[len(name) % 3]
    assert_error(agent.call("POST", "/v1/peering/token", {"PeerName": name}), 400, text)
    # The name is checked before the token is even decoded.
    assert_error(establish(agent, name, "not-a-token"), 400, text)


@pytest.mark.parametrize("name", ["0", "a", "a" * 63, "a-b--c9"])
def test_valid_peer_name_edges_are_accepted(cluster, name):
    generate(cluster.agents[0], name)
    assert read_ok(cluster.agents[1], name)["Name"] == name


def _pairs(n: int) -> dict[str, str]:
    return {f"k{i:02d}": "v" for i in range(n)}


META_CASES = [
    pytest.param(
        _pairs(65),
        "meta tags failed validation: Node metadata cannot contain more than 64 key/value pairs",
        id="65-pairs",
    ),
    pytest.param(
        {"": "v"},
        "meta tags failed validation: Couldn't load metadata pair ('', 'v'): "
        "Key cannot be blank",
        id="blank-key",
    ),
    pytest.param(
        {"a b": "v"},
        "meta tags failed validation: Couldn't load metadata pair ('a b', 'v'): "
        "Key contains invalid characters",
        id="space-in-key",
    ),
    pytest.param(
        {"k\n": "v"},
        "meta tags failed validation: Couldn't load metadata pair ('k\n', 'v'): "
        "Key contains invalid characters",
        id="newline-after-key",
    ),
    pytest.param(
        {"k" * 129: "v"},
        f"meta tags failed validation: Couldn't load metadata pair ('{'k' * 129}', 'v'): "
        "Key is too long (limit: 128 characters)",
        id="key-129",
    ),
    pytest.param(
        {"consul-version": "v"},
        "meta tags failed validation: Couldn't load metadata pair ('consul-version', 'v'): "
        "Key prefix 'consul-' is reserved for internal use",
        id="reserved-prefix",
    ),
    pytest.param(
        {"k": "v" * 513},
        f"meta tags failed validation: Couldn't load metadata pair ('k', '{'v' * 513}'): "
        "Value is too long (limit: 512 characters)",
        id="value-513",
    ),
    pytest.param(
        {"k": "\u00e9" * 257},  # 257 characters, 514 bytes: Go counts bytes
        "meta tags failed validation: Couldn't load metadata pair "
        f"('k', '{chr(0xE9) * 257}'): Value is too long (limit: 512 characters)",
        id="value-514-bytes",
    ),
]


@pytest.mark.parametrize(("meta", "text"), META_CASES)
def test_meta_limits_on_generate_token(cluster, meta, text):
    name = fresh("meta")
    reply = cluster.agents[2].call("POST", "/v1/peering/token", {"PeerName": name, "Meta": meta})
    assert_error(reply, 400, text)
    assert read(cluster.agents[0], name).status == 404


@pytest.mark.parametrize(("meta", "text"), META_CASES)
def test_meta_limits_on_establish(cluster, dc2, meta, text):
    token, _ = generate(dc2.agents[0], fresh("meta-src"))
    name = fresh("meta-dial")
    assert_error(establish(cluster.agents[1], name, token, Meta=meta), 400, text)
    assert read(cluster.agents[0], name).status == 404


def test_meta_at_the_limits_is_accepted(cluster):
    meta = {**_pairs(61), "k" * 128: "v", "long": "v" * 512, "wide": "\u00e9" * 256}
    assert len(meta) == 64
    name = fresh("meta-max")
    generate(cluster.agents[0], name, Meta=meta)
    assert read_ok(cluster.agents[1], name)["Meta"] == meta


# ---- TestHTTP_Peering_Establish / TestPeeringService_Establish_Validation ----


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param(None, "Body decoding failed: EOF", id="no-body"),
        pytest.param(
            b"abc", "Body decoding failed: invalid character 'a' looking for beginning of value",
            id="body-invalid",
        ),
        pytest.param(
            b"{}", "PeerName is required in the payload when establishing a peering.",
            id="no-name",
        ),
        pytest.param(
            b'{"PeerName":"peer1-usw1"}',
            "PeeringToken is required in the payload when establishing a peering.",
            id="no-token",
        ),
        pytest.param(
            b'{"PeerName":"peer1-usw1","PeeringToken":""}',
            "PeeringToken is required in the payload when establishing a peering.",
            id="empty-token",
        ),
        pytest.param(
            b'{"PeerName":"x","PeeringToken":"e30K","ServerExternalAddresses":[]}',
            'Body decoding failed: json: unknown field "ServerExternalAddresses"',
            id="unknown-field",
        ),
    ],
)
def test_establish_rejects_bad_bodies_on_every_node(cluster, raw, text):
    for agent in cluster.agents:
        assert_error(agent.call("POST", "/v1/peering/establish", raw=raw), 400, text)


def _ca_pem(dc2: LocalCluster) -> str:
    return generate(dc2.agents[0], fresh("ca-src"))[1]["CA"][0]


@pytest.mark.parametrize(
    ("make_token", "text"),
    [
        pytest.param(
            lambda ca: "+++/+++", "failed to decode token: illegal base64 data at input byte 4",
            id="bad-base64",
        ),
        pytest.param(lambda ca: "Cg==", "unexpected end of JSON input", id="not-json"),
        pytest.param(
            lambda ca: "e30K", "peering token server addresses value is empty", id="empty-json"
        ),
        pytest.param(
            lambda ca: encode([]),
            "json: cannot unmarshal array into Go value of type structs.PeeringToken",
            id="json-array",
        ),
        pytest.param(
            lambda ca: encode({"ServerAddresses": ["nope"], "PeerID": "p"}),
            "nope is not a valid peering server address", id="address-without-port",
        ),
        pytest.param(
            lambda ca: encode({"ServerAddresses": ["10.0.0.1:0"], "PeerID": "p"}),
            "10.0.0.1:0 is not a valid peering server address", id="port-zero",
        ),
        pytest.param(
            lambda ca: encode({"ManualServerAddresses": ["lb:65536"],
                               "ServerAddresses": ["10.0.0.1:8503"], "PeerID": "p"}),
            "lb:65536 is not a valid peering server address", id="manual-port-too-big",
        ),
        pytest.param(
            lambda ca: encode({"CA": [ca], "ServerAddresses": ["10.0.0.1:8503"], "PeerID": "p"}),
            "peering token server name value is empty", id="ca-without-server-name",
        ),
        pytest.param(
            lambda ca: encode({"ServerAddresses": ["10.0.0.1:8503"]}),
            "peering token peer ID value is empty", id="no-peer-id",
        ),
    ],
)
def test_establish_rejects_bad_tokens(cluster, dc2, make_token, text):
    name = fresh("bad-token")
    agent = cluster.followers()[0]
    assert_error(establish(agent, name, make_token(_ca_pem(dc2))), 400, text)
    assert read(agent, name).status == 404


def test_establish_rejects_an_unparsable_ca(cluster):
    token = encode({"CA": ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
                    "ServerAddresses": ["10.0.0.1:8503"], "ServerName": "s", "PeerID": "p"})
    reply = establish(cluster.agents[0], fresh("bad-ca"), token)
    assert reply.status == 400
    assert reply.text.startswith("peering token invalid CA: ")


def test_establish_with_a_token_from_the_same_cluster_is_rejected(cluster):
    """TestPeeringService_Establish_serverNameConflict (PR #14563)."""
    token, tok = generate(cluster.agents[0], fresh("self-src"))
    name = fresh("self-dial")
    for agent in cluster.agents:
        reply = establish(agent, name, token)
        assert_error(reply, 400, SAME_CLUSTER.format(tok["ServerName"]))
        assert reply.text.startswith('cannot create a peering within the same cluster "server.dc1.')
    assert read(cluster.agents[0], name).status == 404


def test_establish_success_writes_a_pending_dialer_from_the_token(cluster, dc2):
    """TestHTTP_Peering_Establish "Success" + TestPeeringService_Establish (read side)."""
    acceptor_name, name = fresh("dc1-link"), fresh("zip")
    token, tok = generate(dc2.followers()[0], acceptor_name)

    reply = establish(cluster.followers()[1], name, token, Meta={"foo": "bar"})
    assert (reply.status, reply.body) == (200, b"{}")
    assert reply.headers["Content-Type"] == "application/json"
    assert_write_headers(reply)

    rec = read_ok(cluster.agents[0], name)
    assert list(rec) == DIALER_KEYS
    assert rec["State"] in DIALER_STATES
    assert list(rec["StreamStatus"]) == list(NULL_STREAM)
    assert rec["CreateIndex"] <= rec["ModifyIndex"]
    assert {**rec, "State": None, "StreamStatus": None, "ModifyIndex": None} == {
        "ID": rec["ID"],
        "Name": name,
        "Partition": "default",
        "Meta": {"foo": "bar"},
        "State": None,
        "PeerID": tok["PeerID"],
        "PeerCAPems": tok["CA"],
        "PeerServerName": tok["ServerName"],
        "PeerServerAddresses": tok["ServerAddresses"],
        "StreamStatus": None,
        "CreateIndex": rec["CreateIndex"],
        "ModifyIndex": None,
        "Remote": {"Partition": "default", "Datacenter": "dc2"},
    }
    assert uuid.UUID(rec["ID"]).version == 4 and rec["ID"] != tok["PeerID"]
    assert tok["ServerAddresses"] == peering_addresses(dc2)
    assert read_ok(dc2.agents[0], acceptor_name)["ID"] == tok["PeerID"]


def test_establish_again_with_a_new_token_updates_the_same_dialer(cluster, dc2):
    acceptor_name, name = fresh("re-src"), fresh("re-dial")
    token1, _ = generate(dc2.agents[0], acceptor_name)
    assert establish(cluster.agents[0], name, token1, Meta={"v": "1"}).status == 200
    first = read_ok(cluster.agents[0], name)
    token2, tok2 = generate(dc2.agents[1], acceptor_name)
    assert establish(cluster.agents[2], name, token2, Meta={"v": "2"}).status == 200
    second = read_ok(cluster.agents[1], name)
    assert (second["ID"], second["CreateIndex"]) == (first["ID"], first["CreateIndex"])
    assert second["ModifyIndex"] > first["ModifyIndex"]
    assert second["Meta"] == {"v": "2"}  # establish writes the request's Meta
    assert second["PeerID"] == tok2["PeerID"] == first["PeerID"]


def test_establish_with_manual_addresses_keeps_server_addresses(cluster, dc2):
    # A reachable "load balancer": one dc2 server's own peering address.
    manual = [f"127.0.0.1:{dc2.agents[2].peering_port}"]
    token, tok = generate(dc2.agents[2], fresh("lb-src"), ServerExternalAddresses=manual)
    assert tok["ManualServerAddresses"] == manual
    name = fresh("lb-dial")
    reply = establish(cluster.agents[0], name, token)
    assert (reply.status, reply.body) == (200, b"{}"), reply.text
    rec = read_ok(cluster.agents[1], name)
    assert rec["PeerServerAddresses"] == tok["ServerAddresses"] == peering_addresses(dc2)
    assert "ManualServerAddresses" not in rec  # not part of api.Peering


def test_establish_on_an_acceptor_name_is_a_role_conflict(cluster, dc2):
    """TestPeeringService_validatePeer."""
    name = fresh("acceptor")
    generate(cluster.agents[0], name)
    before = read_ok(cluster.agents[0], name)
    token, _ = generate(dc2.agents[0], fresh("conflict-src"))
    for agent in cluster.agents:
        assert_error(
            establish(agent, name, token), 400,
            f'cannot create peering with name: "{name}"; '
            "there is an existing peering expecting to be dialed",
        )
    assert read_ok(cluster.agents[1], name) == before


def test_generate_token_on_a_dialer_name_is_a_role_conflict(cluster, dc2):
    name = fresh("dialer")
    token, tok = generate(dc2.agents[1], fresh("dialer-src"))
    assert establish(cluster.agents[2], name, token).status == 200
    stable = ("ID", "Name", "Partition", "PeerID", "PeerServerName", "CreateIndex")
    before = read_ok(cluster.agents[0], name)
    for agent in cluster.agents:
        assert_error(
            agent.call("POST", "/v1/peering/token", {"PeerName": name}), 400,
            f'cannot create peering with name: "{name}"; there is already an established peering',
        )
    after = read_ok(cluster.agents[1], name)
    assert [after[k] for k in stable] == [before[k] for k in stable]
    assert after["PeerID"] == tok["PeerID"]


# ---- TestHTTP_Peering_Read ----


def test_read_returns_name_meta_null_stream_status_and_remote(cluster):
    name = fresh("foo")
    generate(cluster.agents[0], name, Meta={"foo": "bar"})
    reply = read(cluster.agents[1], name)
    assert reply.status == 200
    assert_read_headers(reply)
    rec = reply.json()
    assert (rec["Name"], rec["Meta"]) == (name, {"foo": "bar"})
    assert list(rec["StreamStatus"]) == list(NULL_STREAM)
    assert rec["StreamStatus"] == NULL_STREAM
    assert rec["Remote"] == NO_REMOTE
    assert rec["Partition"] == "default"
    # Consul's PeeringRead index is the peering's own ModifyIndex.
    assert int(reply.headers["X-Consul-Index"]) == rec["ModifyIndex"]
    assert reply.text == json.dumps(rec, separators=(",", ":"))


def test_read_lowercases_the_name_but_404_echoes_it_as_given(cluster):
    name = fresh("case")
    generate(cluster.agents[0], name)
    assert read(cluster.agents[1], name.upper()).body == read(cluster.agents[1], name).body
    for agent in cluster.agents:
        reply = read(agent, "NoSuch-Peer")
        assert_error(reply, 404, 'Peering not found for "NoSuch-Peer"')


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("baz", 'Peering not found for "baz"'),
        ("foo/bar", 'Peering not found for "foo/bar"'),  # Consul trims the prefix only
        ("a%22b%0A", 'Peering not found for "a\\"b\\n"'),  # Go's %q
        ("caf%C3%A9", 'Peering not found for "caf\u00e9"'),
    ],
)
def test_read_not_found(cluster, path, text):
    assert_error(cluster.agents[2].call("GET", f"/v1/peering/{path}"), 404, text)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_empty_name_is_rejected(cluster, method):
    for agent in cluster.agents:
        assert_error(agent.call(method, "/v1/peering/"), 400, "Must specify a name to fetch.")


def test_every_node_answers_reads_identically(cluster):
    """Followers forward default reads to the leader: every node gives the same answer.
    (Acceptors never dialled: a live stream's timestamps move between two reads.)"""
    acceptor, other, part = fresh("same-a"), fresh("same-b"), fresh("same-p")
    q = f"?partition={part}"
    generate(cluster.agents[1], acceptor, Meta={"x": "y"}, Partition=part)
    generate(cluster.agents[2], other, Partition=part)
    for path in (f"/v1/peering/{acceptor}{q}", f"/v1/peering/{other}{q}", f"/v1/peerings{q}",
                 f"/v1/peering/{acceptor}{q}&pretty", f"/v1/peerings{q}&pretty"):
        replies = [a.call("GET", path) for a in cluster.agents]
        for reply in replies:
            assert reply.status == 200, reply.text
            assert_read_headers(reply)
        assert len({r.body for r in replies}) == 1, path
        if "peerings" not in path:  # a list's index is the whole table's: other tests move it
            assert len({r.headers["X-Consul-Index"] for r in replies}) == 1, path
    assert [p["Name"] for p in replies[0].json()] == sorted([acceptor, other])


def test_pretty_is_four_space_indented_with_a_trailing_newline(cluster):
    name, part = fresh("pretty"), fresh("pretty-p")
    generate(cluster.agents[0], name, Meta={"k": "v", "a": "b"}, Partition=part)
    for path in (f"/v1/peering/{name}?partition={part}", f"/v1/peerings?partition={part}"):
        compact = cluster.agents[1].call("GET", path)
        pretty = cluster.agents[1].call("GET", path + "&pretty")
        assert pretty.status == 200
        assert_read_headers(pretty)
        assert pretty.text == json.dumps(compact.json(), indent=4) + "\n"
        assert pretty.text.startswith(("{\n    \"ID\": ", "[\n    {\n        \"ID\": "))
    token = cluster.agents[2].call("POST", "/v1/peering/token?pretty", {"PeerName": fresh("p")})
    assert token.text == json.dumps(token.json(), indent=4) + "\n"
    est = cluster.agents[2].call("POST", "/v1/peering/establish?pretty", raw=b"{}")
    assert est.status == 400  # errors stay plain text


def test_json_strings_are_escaped_like_go(cluster):
    name = fresh("escape")
    meta = {"html": "<a&b>", "utf8": "caf\u00e9 \u2603", "sep": "x\u2028y"}
    generate(cluster.agents[0], name, Meta=meta)
    reply = read(cluster.agents[1], name)
    assert reply.json()["Meta"] == meta
    assert ('"Meta":{"html":"\\u003ca\\u0026b\\u003e","sep":"x\\u2028y",'
            '"utf8":"caf\u00e9 \u2603"}').encode() in reply.body


def test_a_lone_surrogate_in_a_body_becomes_a_replacement_character(cluster):
    """Go decodes `\\ud800` as U+FFFD; it must never reach the encoder as a lone surrogate."""
    name = fresh("surrogate")
    reply = cluster.agents[0].call(
        "POST", "/v1/peering/token",
        raw=b'{"PeerName":"%s","Meta":{"k":"a\\ud800b\\udc00"}}' % name.encode(),
    )
    assert reply.status == 200, reply.text
    assert read_ok(cluster.agents[1], name)["Meta"] == {"k": "a\ufffdb\ufffd"}
    bad = cluster.agents[2].call("POST", "/v1/peering/token", raw=b'{"PeerName":"x\\ud800"}')
    assert_error(bad, 400, f"x\ufffd is not a valid peer name: {NAME_RULE}")


def test_blocking_read_of_one_peering_ignores_writes_to_others(cluster):
    """The read index is the peering's ModifyIndex: unrelated writes do not wake it."""
    name = fresh("block")
    generate(cluster.agents[0], name)
    index = int(read(cluster.agents[0], name).headers["X-Consul-Index"])
    out: list[Reply] = []
    started = time.monotonic()
    t = threading.Thread(target=lambda: out.append(
        read(cluster.agents[1], name, f"?index={index}&wait=1s")))
    t.start()
    generate(cluster.agents[2], fresh("unrelated"))
    t.join(20)
    elapsed = time.monotonic() - started
    assert out and out[0].status == 200
    assert int(out[0].headers["X-Consul-Index"]) == index
    assert elapsed >= 1.0  # ran to its wait: nothing it watches changed


# ---- TestHTTP_Peering_Delete / TestPeeringService_Delete ----


def _while_deleting(
    leader: Agent, create: Callable[[str], None], probe: Callable[[str], Reply], prefix: str,
) -> tuple[str, Reply]:
    """Delete a new peering and probe it at once. The leader removes DELETING peerings within
    about 0.2 s; when the removal beat the probe (it saw 404, or a write made a new peering
    with another ID), start over with a new peering."""
    for _ in range(10):
        name = fresh(prefix)
        create(name)
        old_id = read_ok(leader, name)["ID"]
        reply = leader.call("DELETE", f"/v1/peering/{name}")
        assert (reply.status, reply.body) == (200, b"")
        result = probe(name)
        if result.status == 404:
            continue
        if result.status == 200 and "State" not in result.json():
            # a write succeeded: only possible because the peering was already removed
            assert read_ok(leader, name)["ID"] != old_id
            leader.call("DELETE", f"/v1/peering/{name}")
            continue
        return name, result
    pytest.fail("never caught a peering in DELETING")


def test_delete_marks_deleting_then_removes(cluster):
    leader, follower = cluster.leader(), cluster.followers()[0]
    meta = {"gone": "soon"}

    def create(name: str) -> None:
        generate(follower, name, Meta=meta)

    name, reply = _while_deleting(leader, create, lambda n: read(leader, n), "del")
    assert_read_headers(reply)
    rec = reply.json()
    # Consul keeps only ID, Name, Partition, addresses; Meta and Remote are dropped.
    assert list(rec) == ["ID", "Name", "Partition", "DeletedAt", "State", "StreamStatus",
                         "CreateIndex", "ModifyIndex", "Remote"]
    assert rec["State"] == "DELETING"
    assert rec["StreamStatus"] == NULL_STREAM and rec["Remote"] == NO_REMOTE
    assert rec["ModifyIndex"] > rec["CreateIndex"]
    assert RFC3339_NANO.match(rec["DeletedAt"]), rec["DeletedAt"]
    deleted_at = datetime.datetime.fromisoformat(rec["DeletedAt"])
    age = datetime.datetime.now(datetime.UTC) - deleted_at
    assert datetime.timedelta(0) <= age < datetime.timedelta(seconds=30)

    eventually(lambda: read(follower, name).status == 404, timeout=15)
    assert_error(read(follower, name), 404, f'Peering not found for "{name}"')
    assert name not in [p["Name"] for p in follower.call("GET", "/v1/peerings").json()]


def test_list_includes_deleting_peerings(cluster):
    leader = cluster.leader()

    def listed(name: str) -> Reply:
        reply = leader.call("GET", "/v1/peerings")
        match = [p for p in reply.json() if p["Name"] == name]
        if not match:
            return Reply(404, {}, b"")
        return Reply(200, reply.headers, json.dumps(match[0]).encode())

    _, reply = _while_deleting(leader, lambda n: generate(leader, n), listed, "del-list")
    assert reply.json()["State"] == "DELETING"
    assert "DeletedAt" in reply.json()


def test_generate_token_is_rejected_while_deleting(cluster):
    leader = cluster.leader()

    def regenerate(name: str) -> Reply:
        return leader.call("POST", "/v1/peering/token", {"PeerName": name})

    name, reply = _while_deleting(leader, lambda n: generate(leader, n), regenerate, "del-tok")
    assert_error(reply, 400, MARKED_FOR_DELETION)


def test_establish_is_rejected_while_deleting(cluster, dc2):
    leader = cluster.leader()
    tokens = iter(generate(dc2.agents[0], fresh("del-src"))[0] for _ in range(40))

    def create(name: str) -> None:
        assert establish(leader, name, next(tokens)).status == 200

    def reestablish(name: str) -> Reply:
        return establish(leader, name, next(tokens))

    def deleting_read(name: str) -> Reply:
        return read(leader, name)

    # The DELETING dialer keeps its addresses (the dialing mode cannot flip) ...
    _, reply = _while_deleting(leader, create, deleting_read, "del-dial-read")
    rec = reply.json()
    assert rec["State"] == "DELETING"
    assert rec["PeerServerAddresses"] == peering_addresses(dc2)
    assert not {"Meta", "PeerID", "PeerCAPems", "PeerServerName"} & set(rec)
    # ... and refuses a new establish while it exists.
    _, reply = _while_deleting(leader, create, reestablish, "del-dial")
    assert_error(reply, 400, MARKED_FOR_DELETION)


def test_delete_is_idempotent_and_lowercases(cluster):
    agent = cluster.agents[1]
    for name in ("baz", fresh("never-was")):
        reply = agent.call("DELETE", f"/v1/peering/{name}")
        assert (reply.status, reply.body) == (200, b"")
        assert_write_headers(reply)
    name = fresh("del-case")
    generate(cluster.agents[0], name)
    for _ in range(2):  # a second DELETE of a DELETING (or removed) peering is a no-op
        reply = cluster.agents[2].call("DELETE", f"/v1/peering/{name.upper()}")
        assert (reply.status, reply.body) == (200, b"")
    eventually(lambda: read(agent, name).status == 404, timeout=15)


# ---- TestHTTP_Peering_List / TestPeeringService_List ----


def test_list_in_a_fresh_partition_is_an_empty_array(cluster):
    partition = fresh("empty")
    for agent in cluster.agents:
        reply = agent.call("GET", f"/v1/peerings?partition={partition}")
        assert (reply.status, reply.body) == (200, b"[]")
        assert_read_headers(reply)


def test_list_is_sorted_by_name_and_matches_read(cluster):
    partition = fresh("listp")
    q = f"?partition={partition}"
    names = ["foo", "bar", "baz"]
    seen: list[list[str]] = []
    for i, name in enumerate(names):
        generate(cluster.agents[i], name, Partition=partition)
        seen.append([p["Name"] for p in cluster.agents[0].call("GET", "/v1/peerings" + q).json()])
    assert seen == [["foo"], ["bar", "foo"], ["bar", "baz", "foo"]]
    reply = cluster.agents[2].call("GET", "/v1/peerings" + q)
    assert_read_headers(reply)
    listed = reply.json()
    assert listed == [read_ok(cluster.agents[1], n, q) for n in sorted(names)]
    assert all(p["StreamStatus"] == NULL_STREAM for p in listed)
    assert int(reply.headers["X-Consul-Index"]) >= max(p["ModifyIndex"] for p in listed)
    default = [p["Name"] for p in cluster.agents[0].call("GET", "/v1/peerings").json()]
    assert not set(names) & set(default)
    assert default == sorted(default)


# ---- partitions ----


def test_same_name_in_two_partitions_is_independent(cluster):
    name, team = fresh("dup"), fresh("team")
    _, tok_default = generate(cluster.agents[0], name, Meta={"p": "default"})
    _, tok_team = generate(cluster.agents[1], name, Partition=team, Meta={"p": "team"})
    assert tok_default["PeerID"] != tok_team["PeerID"]
    assert tok_team["Remote"] == {"Partition": team, "Datacenter": "dc1", "Locality": None}
    assert tok_default["ServerName"] == tok_team["ServerName"]

    default = read_ok(cluster.agents[2], name)
    team_rec = read_ok(cluster.agents[2], name, f"?partition={team}")
    assert (default["ID"], default["Partition"], default["Meta"]) == (
        tok_default["PeerID"], "default", {"p": "default"})
    assert (team_rec["ID"], team_rec["Partition"], team_rec["Meta"]) == (
        tok_team["PeerID"], team, {"p": "team"})
    by_header = cluster.agents[0].call(
        "GET", f"/v1/peering/{name}", headers={"X-Consul-Partition": team})
    assert by_header.json() == team_rec
    assert read_ok(cluster.agents[0], name, "?partition=default") == default

    # token through ?partition= instead of the body: the same peering in that partition
    reply = cluster.agents[2].call("POST", f"/v1/peering/token?partition={team}",
                                   {"PeerName": name})
    assert decode(reply.json()["PeeringToken"])["PeerID"] == tok_team["PeerID"]

    reply = cluster.agents[1].call("DELETE", f"/v1/peering/{name}?partition={team}")
    assert (reply.status, reply.body) == (200, b"")
    eventually(lambda: read(cluster.agents[0], name, f"?partition={team}").status == 404,
               timeout=15)
    assert read_ok(cluster.agents[1], name) == default


def test_a_partition_header_that_is_not_utf8_is_refused_through_every_server(cluster):
    """Followers forward headers before anything is decoded: a value the leader refuses must
    reach it still invalid (aiohttp's client would drop the bytes and write to `default`)."""
    name = fresh("bytes")
    for agent in cluster.agents:
        reply = agent.call("POST", "/v1/peering/token", {"PeerName": name},
                           headers={"X-Consul-Partition": "\xff"})  # the byte 0xff
        assert reply.status == 400, (agent.name, reply.status, reply.text)
        assert reply.text.startswith('Invalid partition name "'), reply.text
    assert read(cluster.agents[0], name).status == 404


def test_establish_in_a_partition(cluster, dc2):
    name, team = fresh("part-dial"), fresh("team")
    token, tok = generate(dc2.agents[0], fresh("part-src"))
    assert establish(cluster.agents[0], name, token, Partition=team).status == 200
    assert read(cluster.agents[1], name).status == 404
    rec = read_ok(cluster.agents[1], name, f"?partition={team}")
    assert (rec["Partition"], rec["PeerID"]) == (team, tok["PeerID"])
    assert rec["Remote"] == {"Partition": "default", "Datacenter": "dc2"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/peering/token", {"PeerName": "p", "Partition": "Bad_Part"}),
        ("POST", "/v1/peering/token?partition=Bad_Part", {"PeerName": "p"}),
        ("POST", "/v1/peering/establish",
         {"PeerName": "p", "PeeringToken": "e30K", "Partition": "Bad_Part"}),
        ("GET", "/v1/peering/p?partition=Bad_Part", None),
        ("DELETE", "/v1/peering/p?partition=Bad_Part", None),
        ("GET", "/v1/peerings?partition=Bad_Part", None),
    ],
)
def test_invalid_partition_is_rejected(cluster, method, path, body):
    reply = cluster.agents[0].call(method, path, body)
    assert_error(reply, 400, 'Invalid partition name "Bad_Part"')


# ---- routing: TestHTTP_Peering_MethodNotAllowed, unknown paths, body limit ----


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/peering/foo", "OPTIONS,GET,DELETE"),
        ("POST", "/v1/peering/foo", "OPTIONS,GET,DELETE"),
        ("PATCH", "/v1/peering/", "OPTIONS,GET,DELETE"),
        ("PUT", "/v1/peerings", "OPTIONS,GET"),
        ("DELETE", "/v1/peerings", "OPTIONS,GET"),
        # Go's ServeMux: the exact paths win over the /v1/peering/ subtree.
        ("GET", "/v1/peering/token", "OPTIONS,POST"),
        ("DELETE", "/v1/peering/token", "OPTIONS,POST"),
        ("PUT", "/v1/peering/establish", "OPTIONS,POST"),
        ("GET", "/v1/peering/establish", "OPTIONS,POST"),
    ],
)
def test_method_not_allowed(cluster, method, path, allow):
    for agent in cluster.agents:
        reply = agent.call(method, path)
        assert_error(reply, 405, f"method {method} not allowed")
        assert reply.headers["Allow"] == allow


@pytest.mark.parametrize(
    ("path", "allow"),
    [("/v1/peering/foo", "OPTIONS,GET,DELETE"), ("/v1/peerings", "OPTIONS,GET"),
     ("/v1/peering/token", "OPTIONS,POST")],
)
def test_head_is_not_allowed(cluster, path, allow):
    reply = cluster.agents[0].call("HEAD", path)
    assert (reply.status, reply.body) == (405, b"")  # a HEAD answer has no body
    assert reply.headers["Allow"] == allow


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/peering/foo", "OPTIONS,GET,DELETE"),
        ("/v1/peering/", "OPTIONS,GET,DELETE"),
        ("/v1/peerings", "OPTIONS,GET"),
        ("/v1/peering/token", "OPTIONS,POST"),
        ("/v1/peering/establish", "OPTIONS,POST"),
    ],
)
def test_options_answers_with_allow(cluster, path, allow):
    for agent in cluster.agents:
        reply = agent.call("OPTIONS", path)
        assert (reply.status, reply.body) == (200, b"")
        assert reply.headers["Allow"] == allow
        assert reply.headers["X-Consul-Default-ACL-Policy"] == "allow"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nope"), ("GET", "/v1/peering"), ("GET", "/v1/peerings/x"),
     ("POST", "/v1/peering-token"), ("DELETE", "/v1/acl/nope")],
)
def test_unknown_path(cluster, method, path):
    assert_error(cluster.agents[1].call(method, path), 404, NOT_A_ROUTE)


def test_body_over_the_limit_is_413(cluster):
    too_big = b'{"PeerName":"' + b"a" * ONE_MIB + b'"}'
    for agent in cluster.agents:
        for path in ("/v1/peering/token", "/v1/peering/establish"):
            reply = agent.call("POST", path, raw=too_big)
            assert reply.status == 413, reply.text
            assert reply.headers["X-Consul-Default-ACL-Policy"] == "allow"
            assert "X-Consul-Index" not in reply.headers
    # exactly at the limit is still decoded (and here refused for its Meta, not its size)
    prefix = b'{"PeerName":"big","Meta":{"k":"'
    at_limit = prefix + b"v" * (ONE_MIB - len(prefix) - 3) + b'"}}'
    assert len(at_limit) == ONE_MIB
    reply = cluster.agents[0].call("POST", "/v1/peering/token", raw=at_limit)
    assert reply.status == 400
    assert reply.text.endswith("Value is too long (limit: 512 characters)")
    # the nodes are unharmed
    generate(cluster.agents[0], fresh("after-413"))
