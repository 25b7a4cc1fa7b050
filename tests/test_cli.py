"""The Consul-style client commands (`peerplane peering …`, `operator raft list-peers`,
`members`) run as a user runs them - the installed console script, a fresh process each - against
real three-server clusters. Output and error texts are Consul's (command/peering/*,
command/operator/raft/listpeers, command/members)."""

from __future__ import annotations

import base64
import http.server
import itertools
import json
import os
import re
import subprocess
import sys
import threading

import pytest

from lab.cluster import LocalCluster, eventually

pytestmark = pytest.mark.integration

_seq = itertools.count(1)
NAME_RULE = (
    "a valid peering name must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
COLUMNS = re.compile(r"\s{2,}")


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}"


def _argv() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "peerplane")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "peerplane_cli"]


def pp(*args: str, addr: str | None = None, env: dict[str, str] | None = None,
       ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    if addr is not None:
        clean["CONSUL_HTTP_ADDR"] = addr
    clean.update(env or {})
    return subprocess.run([*_argv(), *args], env=clean, capture_output=True, text=True,
                          timeout=60)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:{proc.stdout}\n" \
                                 f"stderr:{proc.stderr}"
    return proc.stdout


def fails(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:{proc.stdout}\n" \
                                    f"stderr:{proc.stderr}"
    assert proc.stdout == ""
    return proc.stderr


def table(text: str) -> list[list[str]]:
    return [COLUMNS.split(line.strip()) for line in text.strip().splitlines()]


@pytest.fixture(scope="module")
def dc2(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(str(tmp_path_factory.mktemp("dc2")), datacenter="dc2",
                      extra_args=["--peering-heartbeat", "1"]) as c:
        yield c


# ---- peering generate-token ----


def test_generate_token_prints_a_token_with_external_addresses(cluster):
    name = fresh("gen")
    out = ok(pp("peering", "generate-token", "-name", name,
                "-server-external-addresses", "lb.example.com:8503,10.0.0.9:8503",
                "-meta", "env=prod", "-meta=team=core", addr=cluster.agents[0].http_addr))
    token = json.loads(base64.b64decode(out.strip()))
    # Consul >= 1.14: the external addresses go to ManualServerAddresses.
    assert token["ManualServerAddresses"] == ["lb.example.com:8503", "10.0.0.9:8503"]
    assert out.endswith("\n") and out.count("\n") == 1
    read = json.loads(ok(pp("peering", "read", "-name", name, "-format=json",
                            addr=cluster.agents[1].http_addr)))
    assert read["Meta"] == {"env": "prod", "team": "core"}
    assert read["State"] == "PENDING"


def test_generate_token_json_format(cluster):
    out = ok(pp("peering", "generate-token", "-name", fresh("genjson"), "-format", "json",
                addr=cluster.agents[2].http_addr))
    body = json.loads(out)
    assert list(body) == ["PeeringToken"]
    json.loads(base64.b64decode(body["PeeringToken"]))


def test_generate_token_errors(cluster):
    addr = cluster.agents[0].http_addr
    assert fails(pp("peering", "generate-token", addr=addr)) == \
        "Missing the required -name flag\n"
    assert fails(pp("peering", "generate-token", "-name", "Bad_Name", addr=addr)) == (
        "Error generating peering token for Bad_Name: Unexpected response code: 400 "
        f"(Bad_Name is not a valid peer name: {NAME_RULE})\n"
    )
    assert fails(pp("peering", "generate-token", "-name", "x", "-format=xml", addr=addr)) == \
        "Invalid format, valid formats are {json|pretty}\n"
    err = fails(pp("peering", "generate-token", "-name", "x", "-meta", "novalue", addr=addr))
    assert err.startswith('invalid value "novalue" for flag -meta: missing "=" value in '
                          "argument: novalue\n\nUsage: peerplane peering generate-token")
    err = fails(pp("peering", "generate-token", "-name", "x", "-bogus", addr=addr))
    assert err.startswith("flag provided but not defined: -bogus\n")
    err = fails(pp("peering", "generate-token", "-name", addr=addr))
    assert err.startswith("flag needs an argument: -name\n")


# ---- establish, list, read, delete: across two clusters ----


def test_establish_list_read_delete_across_clusters(cluster, dc2):
    name_on_dc1, name_on_dc2 = fresh("to-dc2"), fresh("to-dc1")
    token = ok(pp("peering", "generate-token", "-name", name_on_dc1,
                  addr=cluster.agents[1].http_addr)).strip()
    out = ok(pp("peering", "establish", "-name", name_on_dc2, "-peering-token", token,
                "-meta", "origin=cli", addr=dc2.agents[2].http_addr))
    assert out == f"Successfully established peering connection with {name_on_dc2}\n"

    def active_everywhere() -> bool:
        for c, name in ((cluster, name_on_dc1), (dc2, name_on_dc2)):
            body = json.loads(ok(pp("peering", "read", "-name", name, "-format=json",
                                    addr=c.agents[0].http_addr)))
            if body["State"] != "ACTIVE":
                return False
        return True

    eventually(active_everywhere, timeout=60, interval=0.5)

    text = ok(pp("peering", "read", "-name", name_on_dc2, addr=dc2.agents[0].http_addr))
    lines = text.splitlines()
    assert lines[0] == f"Name:         {name_on_dc2}"
    assert re.fullmatch(r"ID:           [0-9a-f-]{36}", lines[1])
    assert "Partition:    default" in lines
    assert "State:        ACTIVE" in lines
    assert "Meta:" in lines and "    origin=cli" in lines
    assert any(re.fullmatch(r"Peer Server Name:      server\.dc1\.peering\.[0-9a-f-]{36}\.consul",
                            line) for line in lines)
    assert "Peer CA Pems:          1" in lines
    assert "Imported Services: 0" in lines and "Exported Services: 0" in lines
    assert any(line.startswith("Create Index: ") for line in lines)
    assert any(line.startswith("Modify Index: ") for line in lines)

    rows = table(ok(pp("peering", "list", addr=dc2.agents[1].http_addr)))
    assert rows[0] == ["Name", "State", "Imported Svcs", "Exported Svcs", "Meta"]
    assert [name_on_dc2, "ACTIVE", "0", "0", "origin=cli"] in rows[1:]
    listed = json.loads(ok(pp("peering", "list", "-format=json",
                              addr=dc2.agents[1].http_addr)))
    assert [p["Name"] for p in listed] == sorted(p["Name"] for p in listed)
    assert name_on_dc2 in [p["Name"] for p in listed]

    out = ok(pp("peering", "delete", "-name", name_on_dc2, addr=dc2.agents[0].http_addr))
    assert out == f"Successfully submitted peering connection, {name_on_dc2}, for deletion\n"

    def gone_or_deleting() -> bool:
        proc = pp("peering", "read", "-name", name_on_dc2, "-format=json",
                  addr=dc2.agents[0].http_addr)
        if proc.returncode == 1:
            return proc.stderr == f"No peering with name {name_on_dc2} found.\n"
        return json.loads(proc.stdout)["State"] in ("DELETING", "TERMINATED")

    eventually(gone_or_deleting, timeout=30, interval=0.5)


def test_establish_errors(cluster, dc2):
    addr = dc2.agents[0].http_addr
    assert fails(pp("peering", "establish", "-peering-token", "abc", addr=addr)) == \
        "Missing the required -name flag\n"
    assert fails(pp("peering", "establish", "-name", "x", addr=addr)) == \
        "Missing the required -peering-token flag\n"
    err = fails(pp("peering", "establish", "-name", "bad-token", "-peering-token", "%%%",
                   addr=addr))
    assert err.startswith("Error establishing peering for bad-token: Unexpected response "
                          "code: 400 (")
    # A token of this very cluster: Consul refuses a peering with itself.
    token = ok(pp("peering", "generate-token", "-name", fresh("self"), addr=addr)).strip()
    name = fresh("self-dial")
    err = fails(pp("peering", "establish", "-name", name, "-peering-token", token, addr=addr))
    assert err.startswith(f"Error establishing peering for {name}: Unexpected response code: "
                          "400 (cannot create a peering within the same cluster ")


def test_read_and_delete_missing_peering(cluster):
    addr = cluster.agents[0].http_addr
    assert fails(pp("peering", "read", "-name", "no-such-peer", addr=addr)) == \
        "No peering with name no-such-peer found.\n"
    assert fails(pp("peering", "read", addr=addr)) == "Missing the required -name flag\n"
    assert fails(pp("peering", "delete", addr=addr)) == "Missing the required -name flag\n"


def test_list_when_there_are_none(cluster):
    addr = cluster.agents[0].http_addr
    # A partition nobody wrote to: no peerings there.
    assert ok(pp("peering", "list", "-partition", "empty-part", addr=addr)) == \
        "There are no peering connections.\n"
    assert ok(pp("peering", "list", "-partition=empty-part", "-format=json", addr=addr)) == \
        "[]\n"


def test_exported_services_lists_what_goes_to_one_peer(cluster):
    addr = cluster.agents[1].http_addr
    assert ok(pp("peering", "exported-services", "-name", "west", addr=addr)) == \
        "No services are exported to west.\n"
    entry = {"Kind": "exported-services", "Name": "default", "Services": [
        {"Name": "web", "Consumers": [{"Peer": "west"}, {"Peer": "east"}]},
        {"Name": "api", "Consumers": [{"Peer": "west"}]},
        {"Name": "db", "Consumers": [{"Peer": "east"}]}]}
    assert cluster.agents[0].call("PUT", "/v1/config", entry).text == "true"
    assert ok(pp("peering", "exported-services", "-name", "west", addr=addr)) == "api\nweb\n"
    assert ok(pp("peering", "exported-services", "-name=east", "-format=json", addr=addr)) == \
        '["db","web"]\n'
    assert fails(pp("peering", "exported-services", addr=addr)) == \
        "Missing the required -name flag\n"
    entry["Services"].append({"Name": "*", "Consumers": [{"Peer": "all"}]})
    assert cluster.agents[0].call("PUT", "/v1/config", entry).text == "true"
    registered = cluster.agents[0].call("PUT", "/v1/catalog/register", {
        "Node": "cli-node", "Address": "10.0.0.1", "Service": {"Service": "cli-svc"}})
    assert registered.text == "true"
    assert "cli-svc\n" in ok(pp("peering", "exported-services", "-name", "all", addr=addr))
    cluster.agents[0].call("DELETE", "/v1/config/exported-services/default")


# ---- operator raft list-peers and members ----


def test_operator_raft_list_peers(cluster):
    leader = cluster.leader()
    follower = next(a for a in cluster.agents if a is not leader)
    rows = table(ok(pp("operator", "raft", "list-peers", addr=follower.http_addr)))
    assert rows[0] == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol",
                       "Commit Index", "Trails Leader By"]
    body = {r[0]: r for r in rows[1:]}
    assert sorted(body) == sorted(a.name for a in cluster.agents)
    assert body[leader.name][2:6] == [leader.raft_addr, "leader", "true", "3"]
    assert body[leader.name][7] == "_"
    for a in cluster.agents:
        assert body[a.name][2] == a.raft_addr
        assert int(body[a.name][6]) >= 1
        if a is not leader:
            assert body[a.name][3] == "follower"
            assert re.fullmatch(r"\d+ Commits?", " ".join(body[a.name][7:]))
    as_json = json.loads(ok(pp("operator", "raft", "list-peers", "-stale", "-format=json",
                               addr=follower.http_addr)))
    assert sorted(r["Node"] for r in as_json) == sorted(a.name for a in cluster.agents)
    assert [r["Node"] for r in as_json if r["State"] == "leader"] == [leader.name]


def test_members(cluster):
    addr = cluster.agents[1].http_addr
    rows = table(ok(pp("members", addr=addr)))
    assert rows[0] == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC",
                       "Partition", "Segment"]
    assert [r[0] for r in rows[1:]] == sorted(a.name for a in cluster.agents)
    for r, a in zip(rows[1:], sorted(cluster.agents, key=lambda a: a.name), strict=True):
        assert r[1:4] == [a.raft_addr, "alive", "server"]
        assert r[5:] == ["2", "dc1", "default", "<all>"]
    detailed = table(ok(pp("members", "-detailed", addr=addr)))
    assert detailed[0] == ["Node", "Address", "Status", "Tags"]
    assert all("role=consul" in r[3] and "dc=dc1" in r[3] for r in detailed[1:])
    assert fails(pp("members", "-status=failed", addr=addr), code=2) == ""
    as_json = json.loads(ok(pp("members", "-format=json", addr=addr)))
    assert {m["Name"] for m in as_json} == {a.name for a in cluster.agents}
    assert all(m["Status"] == 1 and m["Tags"]["role"] == "consul" for m in as_json)


# ---- addresses, tokens, transport errors, help ----


def test_http_addr_flag_wins_over_environment(cluster):
    dead = "127.0.0.1:1"
    err = fails(pp("peering", "list", addr=dead))
    assert err == ('Error listing peerings: Get "http://127.0.0.1:1/v1/peerings": dial tcp '
                   "127.0.0.1:1: connect: connection refused\n")
    out = ok(pp("peering", "list", "-format=json",
                "-http-addr", f"http://{cluster.agents[0].http_addr}", addr=dead))
    assert isinstance(json.loads(out), list)
    err = fails(pp("operator", "raft", "list-peers", addr=dead))
    assert err.startswith("Error getting peers: Failed to retrieve raft configuration: Get ")


class _Capture(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802
        _Capture.seen.append({"path": self.path, **dict(self.headers.items())})
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_token_from_flag_file_and_environment(tmp_path):
    """Which token is sent, as X-Consul-Token: -token, then -token-file, then
    CONSUL_HTTP_TOKEN, then CONSUL_HTTP_TOKEN_FILE. (A local HTTP listener records the
    header; the ACL checks themselves are tested against real clusters with ACLs.)"""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    addr = f"127.0.0.1:{server.server_address[1]}"
    flag_file, env_file = tmp_path / "flag-token", tmp_path / "env-token"
    flag_file.write_text("from-flag-file\n")
    env_file.write_text("from-env-file\n")
    try:
        cases = [
            (["-token", "from-flag"], {"CONSUL_HTTP_TOKEN": "from-env"}, "from-flag"),
            ([f"-token-file={flag_file}"], {"CONSUL_HTTP_TOKEN": "from-env"}, "from-flag-file"),
            ([], {"CONSUL_HTTP_TOKEN": "from-env"}, "from-env"),
            ([], {"CONSUL_HTTP_TOKEN_FILE": str(env_file)}, "from-env-file"),
            ([], {}, None),
        ]
        for flags, env, expected in cases:
            _Capture.seen.clear()
            ok(pp("peering", "list", "-partition", "default", *flags, addr=addr, env=env))
            (req,) = _Capture.seen
            assert req.get("X-Consul-Token") == expected, (flags, env, req)
            assert req["path"] == "/v1/peerings?partition=default"
    finally:
        server.shutdown()


def test_help_and_unknown_subcommands(cluster):
    proc = pp("peering", "read", "-h")
    assert proc.returncode == 0
    assert proc.stderr.startswith("Usage: peerplane peering read [options] -name <peer name>")
    assert "-http-addr" in proc.stderr and "-format" in proc.stderr
    proc = pp("peering")
    assert proc.returncode == 1 and "generate-token" in proc.stderr
    proc = pp("peering", "frobnicate")
    assert proc.returncode == 1 and "unknown subcommand 'frobnicate'" in proc.stderr
    proc = pp("--help")
    assert proc.returncode == 0
    for cmd in ("agent", "dev", "peering", "operator", "members"):
        assert cmd in proc.stdout
