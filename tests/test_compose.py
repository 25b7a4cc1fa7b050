"""The docker-compose clusters on a real Docker engine (run alone: `pytest -m compose`).

Builds the image with deploy/build.sh (cached), brings up dc1 and dc2 (profile `peer`) from the
repository's docker-compose.yml under a project name of its own - two sites, each on a network of
its own, that meet only through published peering ports on the host (as behind NAT) - and drives
everything through the published HTTP ports: one leader, writes through every node, the sites'
isolation, peering dc1 <-> dc2 to ACTIVE through the published addresses only, `docker kill` of
the leader (on one side, then on both), `docker network disconnect` of the leader and its return.
The project is always taken down with `down -v`, and nothing of it may be left behind.

A missing or unreachable Docker engine fails these tests; it never skips them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lab.cluster import eventually
from lab.http import Reply, call

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[1]
DC1 = {"dc1-server-1": 8500, "dc1-server-2": 8501, "dc1-server-3": 8502}
DC2 = {"dc2-server-1": 8510, "dc2-server-2": 8511, "dc2-server-3": 8512}
PORTS = {**DC1, **DC2}
# The peering ports each server publishes on the host, and advertises (advertise_addr_wan).
WAN = {name: f"host.docker.internal:{port + 3}" for name, port in PORTS.items()}
# Fast peer-stream timings for the test only (the compose file keeps Consul's 15 s / 2 min).
FAST_STREAM = {"PEERPLANE_PEERING_HEARTBEAT": "1", "PEERPLANE_PEERING_HEARTBEAT_TIMEOUT": "10"}


def run(cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


def http(port: int, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Reply:
    return call(method, f"http://127.0.0.1:{port}{path}", body, timeout=timeout)


def json_ok(port: int, path: str) -> Any:
    reply = http(port, "GET", path)
    assert reply.status == 200, (port, path, reply.status, reply.text)
    return reply.json()


def leader_of(port: int) -> str:
    """The leader this node knows, as a service name ('' when none)."""
    return json_ok(port, "/v1/status/leader").partition(":")[0]


def raft_state(port: int) -> str:
    return json_ok(port, "/v1/agent/self")["Stats"]["raft"]["state"]


def agreed_leader(nodes: dict[str, int]) -> str:
    """The leader every given node names, provided it is one of them and says so itself."""
    names = {leader_of(port) for port in nodes.values()}
    assert len(names) == 1, f"nodes disagree on the leader: {names}"
    name = names.pop()
    assert name in nodes, f"leader {name!r} is not among {sorted(nodes)}"
    assert raft_state(nodes[name]) == "Leader"
    return name


def peering(port: int, name: str, query: str = "") -> dict[str, Any] | None:
    reply = http(port, "GET", f"/v1/peering/{name}{query}")
    if reply.status == 404:
        return None
    assert reply.status == 200, (port, name, reply.status, reply.text)
    return reply.json()


def peering_any(nodes: dict[str, int], name: str) -> dict[str, Any] | None:
    """The peering through the first node that answers at all."""
    errors = []
    for port in nodes.values():
        try:
            return peering(port, name)
        except OSError as e:
            errors.append(f"{port}: {e}")
    raise AssertionError(f"no node answered: {errors}")


def when(stamp: str | None) -> float:
    """A StreamStatus timestamp as epoch seconds (0 when unset)."""
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


def write_token(port: int, name: str) -> None:
    reply = http(port, "POST", "/v1/peering/token", {"PeerName": name}, timeout=30)
    assert reply.status == 200, (port, name, reply.status, reply.text)
    assert reply.json()["PeeringToken"]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Stack:
    project: str
    compose_cmd: list[str]
    networks: dict[str, str]  # "dc1"/"dc2" -> the Docker network of that site

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return run([*self.compose_cmd, *args], timeout=timeout)

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        assert cid, f"no container for {service}"
        return cid

    def network(self, service: str) -> str:
        return self.networks[service[:3]]

    def ip(self, service: str) -> str:
        fmt = f'{{{{(index .NetworkSettings.Networks "{self.network(service)}").IPAddress}}}}'
        return run(["docker", "inspect", "-f", fmt, self.container(service)]).stdout.strip()

    def python(self, service: str, code: str) -> subprocess.CompletedProcess:
        """Run Python inside a server's container (the image's interpreter)."""
        return run(["docker", "exec", self.container(service), "/opt/peerplane/bin/python", "-c",
                    code], check=False, timeout=60)

    def logs(self) -> str:
        return run([*self.compose_cmd, "logs", "--no-color", "--tail", "40"], check=False).stdout


def compose_binary() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor the `docker compose` plugin is installed")


def leftovers(project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        out = run(["docker", *kind, "-q", "--filter", label], check=False).stdout.split()
        found += [f"{kind[0]}:{x}" for x in out]
    return found


def remove_leftovers(project: str) -> None:
    label = f"label=com.docker.compose.project={project}"
    for ls, rm in ((["ps", "-a"], ["rm", "-f", "-v"]), (["network", "ls"], ["network", "rm"]),
                   (["volume", "ls"], ["volume", "rm", "-f"])):
        ids = run(["docker", *ls, "-q", "--filter", label], check=False).stdout.split()
        if ids:
            run(["docker", *rm, *ids], check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: the compose tests need a Docker engine")
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30, check=False)
    if info.returncode != 0:
        pytest.fail(f"the Docker engine is unreachable: {info.stderr.strip()}")
    busy = [p for p in PORTS.values() if not port_free(p)]
    if busy:
        pytest.fail(f"host ports {busy} are in use; the compose file publishes 8500-8502/8510-8512")

    # The image, through the same script a user runs (cached when nothing changed).
    env = dict(os.environ, PYTHON=sys.executable)
    built = subprocess.run([str(ROOT / "deploy" / "build.sh")], env=env, capture_output=True,
                           text=True, timeout=3600)
    assert built.returncode == 0, f"deploy/build.sh failed:\n{built.stdout}\n{built.stderr}"

    override = tmp_path_factory.mktemp("compose") / "fast-stream.yml"
    override.write_text(json.dumps(  # JSON is YAML
        {"services": {name: {"environment": FAST_STREAM} for name in PORTS}}
    ))
    project = f"pptest{uuid.uuid4().hex[:10]}"
    compose_cmd = [*compose_binary(), "-p", project, "-f", str(ROOT / "docker-compose.yml"),
                   "-f", str(override), "--profile", "peer"]
    try:
        run([*compose_cmd, "up", "-d"], timeout=300)
        ids = run([*compose_cmd, "ps", "-q"]).stdout.split()
        assert len(ids) == 6, ids
        site_networks: dict[str, set[str]] = {"dc1": set(), "dc2": set()}
        for service in PORTS:
            cid = run([*compose_cmd, "ps", "-q", service]).stdout.strip()
            nets = json.loads(run(
                ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", cid]).stdout)
            site_networks[service[:3]] |= set(nets)
        # each site on exactly one network, and not the other site's
        assert all(len(n) == 1 for n in site_networks.values()), site_networks
        assert site_networks["dc1"] != site_networks["dc2"], site_networks
        s = Stack(project, compose_cmd, {dc: n.pop() for dc, n in site_networks.items()})

        def healthy() -> bool:
            fmt = "{{.Name}} {{.State.Status}} {{.State.Health.Status}}"
            out = run(["docker", "inspect", "-f", fmt, *ids]).stdout.splitlines()
            assert all(line.endswith(" running healthy") for line in out), out
            return True

        try:
            eventually(healthy, 180, 1.0)
        except AssertionError as e:
            raise AssertionError(f"containers not healthy: {e}\n{s.logs()}") from None
        yield s
    finally:
        down = run([*compose_cmd, "down", "-v", "--remove-orphans", "--timeout", "5"],
                   timeout=300, check=False)
        left = leftovers(project)
        if left:
            remove_leftovers(project)
        assert down.returncode == 0, f"compose down failed: {down.stderr[-2000:]}"
        assert not left, f"compose down -v left these behind: {left}"


def wait_leader(nodes: dict[str, int], timeout: float = 30.0, not_: str = "") -> str:
    def check() -> str:
        name = agreed_leader(nodes)
        assert name != not_, f"{not_} still leads"
        return name

    return eventually(check, timeout, 0.25)


def wait_active(since: float = 0.0, timeout: float = 60.0, dc1: dict[str, int] = DC1,
                dc2: dict[str, int] = DC2) -> None:
    """dc1's 'dc2' and dc2's 'dc1' are ACTIVE, with a stream that received after `since`.

    Asked through the first of the given dc1 nodes that answers (default reads are answered
    by the leader, so any live node will do), and through dc2's nodes likewise."""

    def check() -> bool:
        for nodes, name in ((dc1, "dc2"), (dc2, "dc1")):
            rec = peering_any(nodes, name)
            assert rec is not None, f"peering {name} missing"
            assert rec["State"] == "ACTIVE", (name, rec["State"])
            last = when((rec.get("StreamStatus") or {}).get("LastReceive"))
            assert last > since, f"{name}: no stream message since {since} (last {last})"
        return True

    eventually(check, timeout, 0.25)


@pytest.fixture(scope="module")
def peered(stack: Stack) -> None:
    """dc1 and dc2 peered (dc1 names the peer 'dc2', dc2 names it 'dc1') and ACTIVE."""
    wait_leader(DC1)
    wait_leader(DC2)
    token = http(DC1["dc1-server-2"], "POST", "/v1/peering/token", {"PeerName": "dc2"})
    assert token.status == 200, token.text
    established = http(DC2["dc2-server-3"], "POST", "/v1/peering/establish",
                       {"PeerName": "dc1", "PeeringToken": token.json()["PeeringToken"]},
                       timeout=30)
    assert established.status == 200, established.text
    try:
        wait_active()
    except AssertionError as e:
        raise AssertionError(f"peering never became ACTIVE: {e}\n{stack.logs()}") from None


def test_each_cluster_has_one_leader_and_every_node_takes_writes(stack: Stack) -> None:
    for nodes in (DC1, DC2):
        leader = wait_leader(nodes)
        for port in nodes.values():
            assert sorted(p.partition(":")[0] for p in json_ok(port, "/v1/status/peers")) == \
                sorted(nodes)
            if port != nodes[leader]:
                assert raft_state(port) == "Follower"
    for name, port in DC1.items():  # followers forward the write to the leader
        write_token(port, f"write-via-{name}")
    for name in DC1:
        for port in DC1.values():
            rec = peering(port, f"write-via-{name}", "?consistent")
            assert rec is not None and rec["State"] == "PENDING", (name, port, rec)


def test_peering_dc1_dc2_reaches_active_on_every_node(stack: Stack, peered: None) -> None:
    for nodes, name, remote in ((DC1, "dc2", "dc2"), (DC2, "dc1", "dc1")):
        for port in nodes.values():
            rec = eventually(lambda p=port, n=name: peering(p, n, "?stale"), 10, 0.25)
            assert rec["State"] == "ACTIVE", (port, rec)
            assert rec["Remote"]["Datacenter"] == remote, rec


def test_docker_kill_leader_elects_new_leader_and_peering_recovers(
    stack: Stack, peered: None
) -> None:
    old = wait_leader(DC1)
    survivors = {n: p for n, p in DC1.items() if n != old}
    killed_at = time.time()
    run(["docker", "kill", stack.container(old)])

    new = wait_leader(survivors, 30, not_=old)
    for name, port in survivors.items():
        write_token(port, f"after-kill-via-{name}")
    try:
        wait_active(since=killed_at, dc1=survivors)  # the new leader streams with dc2 again
    except AssertionError as e:
        raise AssertionError(f"peering did not recover: {e}\n{stack.logs()}") from None

    # `docker kill` counts as a manual stop for the restart policy: start it as an operator would.
    run(["docker", "start", stack.container(old)])

    def rejoined() -> bool:
        assert leader_of(DC1[old]) == new
        assert raft_state(DC1[old]) == "Follower"
        for name in survivors:
            assert peering(DC1[old], f"after-kill-via-{name}", "?stale") is not None
        return True

    eventually(rejoined, 60, 0.5)
    assert wait_leader(DC1) == new


def test_network_disconnect_leader_majority_takes_over_and_old_leader_rejoins(
    stack: Stack, peered: None
) -> None:
    old = wait_leader(DC1)
    majority = {n: p for n, p in DC1.items() if n != old}
    cid = stack.container(old)
    ip_before = stack.ip(old)
    run(["docker", "network", "disconnect", stack.network(old), cid])
    try:
        new = wait_leader(majority, 30, not_=old)
        write_token(majority[new], "during-partition")
        other = next(n for n in majority if n != new)
        write_token(majority[other], "during-partition-via-follower")

        # The isolated old leader steps down (no quorum): ask it from inside its container.
        probe = ("import json, urllib.request; print(json.load(urllib.request.urlopen("
                 "'http://127.0.0.1:8500/v1/agent/self', timeout=3))['Stats']['raft']['state'])")

        def stepped_down() -> bool:
            out = run(["docker", "exec", cid, "/opt/peerplane/bin/python", "-c", probe])
            assert out.stdout.strip() != "Leader"
            return True

        eventually(stepped_down, 30, 0.5)
        assert peering(majority[new], "during-partition") is not None
    finally:
        run(["docker", "network", "connect", "--alias", old, stack.network(old), cid])
    ip_after = stack.ip(old)

    def rejoined() -> bool:
        assert leader_of(DC1[old]) == new
        assert raft_state(DC1[old]) == "Follower"
        for name in ("during-partition", "during-partition-via-follower"):
            assert peering(DC1[old], name, "?stale") is not None, name
        return True

    try:
        eventually(rejoined, 60, 0.5)
    except AssertionError as e:
        raise AssertionError(
            f"{old} did not rejoin as a follower with the majority's data: {e} "
            f"(address {ip_before} -> {ip_after})\n{stack.logs()}"
        ) from None
    assert wait_leader(DC1) == new
    wait_active(since=time.time() - 5)


_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""


def can_connect(stack: Stack, service: str, host: str, port: int) -> str:
    code = _CONNECT.replace("sys.argv[1]", repr(host)).replace("int(sys.argv[2])", str(port))
    out = stack.python(service, code)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_sites_meet_only_through_published_ports(stack: Stack) -> None:
    """A dc2 server cannot reach a dc1 server's own address (nor the other way round), but it
    reaches dc1's published peering port on the host - and so does dc1 reach dc2's."""
    for here, there in (("dc2-server-1", "dc1-server-1"), ("dc1-server-2", "dc2-server-3")):
        assert can_connect(stack, here, stack.ip(there), 8503) != "connected", (here, there)
        host, port = WAN[there].split(":")
        assert can_connect(stack, here, host, int(port)) == "connected", (here, WAN[there])
        # and a server of the same site is reachable by name, as Raft needs
        sibling = here[:-1] + ("2" if here[-1] != "2" else "1")
        assert can_connect(stack, here, sibling, 8300) == "connected", (here, sibling)


def test_tokens_and_pushed_server_addresses_carry_the_published_addresses(
    stack: Stack, peered: None
) -> None:
    reply = http(DC1["dc1-server-1"], "POST", "/v1/peering/token", {"PeerName": "addr-check"})
    assert reply.status == 200, reply.text
    token = json.loads(base64.b64decode(reply.json()["PeeringToken"]))
    assert token["ServerAddresses"] == sorted(WAN[n] for n in DC1)
    # dc2 dialled dc1 through them and keeps them as dc1 pushes its servers over the stream
    rec = peering_any(DC2, "dc1")
    assert rec is not None and rec["State"] == "ACTIVE"
    assert sorted(rec["PeerServerAddresses"]) == sorted(WAN[n] for n in DC1)


def register(port: int, node: str, address: str) -> None:
    reply = http(port, "PUT", "/v1/catalog/register", {
        "Node": node, "Address": address, "Service": {"Service": "web", "Port": 8080},
        "Check": {"Name": "http", "Status": "passing", "ServiceID": "web"}}, timeout=30)
    assert (reply.status, reply.text) == (200, "true"), reply.text


def imported_web_nodes(nodes: dict[str, int]) -> set[str]:
    """The nodes of `web` that dc2 imported from dc1, through the first dc2 node answering."""
    for port in nodes.values():
        try:
            reply = http(port, "GET", "/v1/health/service/web?peer=dc1")
        except OSError:
            continue
        assert reply.status == 200, reply.text
        return {e["Node"]["Node"] for e in reply.json()}
    raise AssertionError("no dc2 node answered")


def test_a_leader_kill_on_each_side_keeps_the_peering_active_and_data_flowing(
    stack: Stack, peered: None
) -> None:
    """dc1 exports `web` to dc2; both leaders are killed at once; new leaders stream through
    the published ports again and a new instance registered on dc1 afterwards reaches dc2."""
    register(DC1["dc1-server-1"], "before-kill", "10.1.0.1")
    entry = {"Kind": "exported-services", "Name": "default",
             "Services": [{"Name": "web", "Consumers": [{"Peer": "dc2"}]}]}
    reply = http(DC1["dc1-server-2"], "PUT", "/v1/config", entry, timeout=30)
    assert (reply.status, reply.text) == (200, "true"), reply.text
    eventually(lambda: imported_web_nodes(DC2) == {"before-kill"}, 30, 0.25)

    old = {"dc1": wait_leader(DC1), "dc2": wait_leader(DC2)}
    killed_at = time.time()
    for name in old.values():
        run(["docker", "kill", stack.container(name)])
    live1 = {n: p for n, p in DC1.items() if n != old["dc1"]}
    live2 = {n: p for n, p in DC2.items() if n != old["dc2"]}
    new1 = wait_leader(live1, 30, not_=old["dc1"])
    new2 = wait_leader(live2, 30, not_=old["dc2"])
    try:  # both new leaders stream with each other again, through the published ports only
        wait_active(since=killed_at, dc1=live1, dc2=live2)
    except AssertionError as e:
        raise AssertionError(f"peering did not recover: {e}\n{stack.logs()}") from None
    register(next(iter(live1.values())), "after-kill", "10.1.0.2")
    try:
        eventually(lambda: imported_web_nodes(live2) == {"before-kill", "after-kill"}, 30, 0.25)
    except AssertionError as e:
        raise AssertionError(f"the export did not flow after the kills: {e}\n{stack.logs()}") \
            from None

    for name in old.values():
        run(["docker", "start", stack.container(name)])

    def rejoined() -> bool:
        for nodes, name, leader in ((DC1, old["dc1"], new1), (DC2, old["dc2"], new2)):
            assert leader_of(nodes[name]) == leader
            assert raft_state(nodes[name]) == "Follower"
        return True

    eventually(rejoined, 60, 0.5)
    wait_active(since=time.time() - 5)
    assert imported_web_nodes(DC2) == {"before-kill", "after-kill"}


def peer_names(port: int) -> list[str]:
    return sorted(p.partition(":")[0] for p in json_ok(port, "/v1/status/peers"))


def test_a_server_whose_volume_was_lost_is_replaced_by_remove_peer_and_a_fresh_join(
    stack: Stack, peered: None
) -> None:
    """README "Replace a server whose volume was lost", step by step on the real engine."""
    leader = wait_leader(DC1)
    victim = next(n for n in DC1 if n != leader)
    survivors = {n: p for n, p in DC1.items() if n != victim}
    write_token(DC1[leader], "before-replace")
    run(["docker", "rm", "-f", stack.container(victim)])
    run(["docker", "volume", "rm", f"{stack.project}_{victim}"])  # the lost volume

    reply = http(DC1[leader], "DELETE", f"/v1/operator/raft/peer?address={victim}:8300",
                 timeout=15)
    assert (reply.status, reply.text) == (200, "")
    eventually(lambda: all(peer_names(p) == sorted(survivors) for p in survivors.values()), 30)
    write_token(survivors[leader], "while-replaced")

    join = [*stack.compose_cmd, "-f", str(ROOT / "deploy" / "compose-join.yml")]
    run([*join, "up", "-d", "--no-deps", victim], timeout=180)

    def rejoined() -> bool:
        assert all(peer_names(p) == sorted(DC1) for p in DC1.values())
        assert raft_state(DC1[victim]) == "Follower"
        for name in ("before-replace", "while-replaced"):
            assert peering(DC1[victim], name, "?stale") is not None, name
        return True

    try:
        eventually(rejoined, 90, 0.5)
    except AssertionError as e:
        raise AssertionError(f"{victim} did not come back: {e}\n{stack.logs()}") from None
    write_token(DC1[victim], "via-the-replacement")
    # A later plain `up` recreates it with bootstrap_expect = 3 again: it stays a member.
    stack.compose("up", "-d", "--no-deps", victim)
    eventually(rejoined, 90, 0.5)
    # A ?stale read on a server that just restarted sees the leader's newer entries with its
    # next append_entries, not at once.
    eventually(lambda: peering(DC1[victim], "via-the-replacement", "?stale") is not None, 30)
    wait_leader(DC1)
