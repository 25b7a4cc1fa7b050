"""Addresses that work across networks: `--advertise-wan` (advertise_addr_wan) is the peering
address a server gives other clusters - in tokens, in the server addresses pushed over the peer
stream, in leader hints - and a dialer never lets a push replace the address it reached the
acceptor through with ones it cannot reach (hashicorp/consul #15051, #15763). Real one-server
clusters on loopback; the unreachable addresses are TEST-NET-1 (192.0.2.0/24, RFC 5737)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from lab.cluster import LocalCluster, eventually
from lab.peering import STREAM_ARGS, decode, encode, establish, peering, token, wait_state

pytestmark = pytest.mark.integration

UNREACHABLE = "192.0.2.1:8503"


@pytest.fixture(scope="module")
def acceptor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """dc1: its only server advertises an address nobody can reach for peering."""
    c = LocalCluster(str(tmp_path_factory.mktemp("dc1")), nodes=1, datacenter="dc1",
                     extra_args=[*STREAM_ARGS, "--advertise-wan", UNREACHABLE])
    with c:
        yield c


@pytest.fixture(scope="module")
def dialer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(str(tmp_path_factory.mktemp("dc2")), nodes=1, datacenter="dc2",
                     extra_args=STREAM_ARGS)
    with c:
        yield c


def test_tokens_carry_the_advertised_wan_address(acceptor: LocalCluster) -> None:
    doc = decode(token(acceptor, "wan-token"))
    assert doc["ServerAddresses"] == [UNREACHABLE]
    assert doc["ManualServerAddresses"] is None
    doc = decode(token(acceptor, "wan-token-lb", ServerExternalAddresses=["lb.example:8503"]))
    assert (doc["ServerAddresses"], doc["ManualServerAddresses"]) == \
        ([UNREACHABLE], ["lb.example:8503"])


def test_the_member_list_shows_the_wan_peering_address(acceptor: LocalCluster) -> None:
    (member,) = acceptor.agents[0].call("GET", "/v1/agent/members").json()
    assert member["Tags"]["peering_addr"] == UNREACHABLE


def test_advertise_wan_without_a_port_takes_the_peering_port(tmp_path) -> None:
    c = LocalCluster(str(tmp_path), nodes=1, extra_args=["--advertise-wan", "wan.example"])
    with c:
        port = c.agents[0].peering_port
        assert decode(token(c, "p"))["ServerAddresses"] == [f"wan.example:{port}"]


def test_pushed_addresses_never_replace_the_address_that_reached_the_acceptor(
    acceptor: LocalCluster, dialer: LocalCluster
) -> None:
    # The dialer knows a path to dc1 the token does not name (a VPN, say): it dials that.
    real = f"127.0.0.1:{acceptor.agents[0].peering_port}"
    doc = decode(token(acceptor, "reach"))
    doc["ServerAddresses"] = [real]
    reply = establish(dialer, "reach", encode(doc))
    assert reply.status == 200, reply.text
    wait_state(dialer, "reach", "ACTIVE")

    # dc1 pushes the address it advertises; dc2 adds it and keeps the one that works.
    def merged() -> bool:
        rec = peering(dialer.agents[0], "reach")
        assert rec is not None and rec["PeerServerAddresses"] == sorted([real, UNREACHABLE]), rec
        return True

    eventually(merged, 30, 0.1)
    assert any("keeping ['" + real + "'] (reached)" in line
               for line in dialer.agents[0].log_lines)

    # A dialer that restarts dials from what it stored, and gets through again.
    restarted = time.time()
    dialer.agents[0].stop()
    dialer.agents[0].start()
    dialer.agents[0].wait_ready()

    def streaming_again() -> bool:
        rec = peering(dialer.agents[0], "reach")
        assert rec is not None and rec["State"] == "ACTIVE", rec
        last = rec["StreamStatus"]["LastReceive"]
        assert last and datetime.fromisoformat(last).replace(tzinfo=UTC).timestamp() > \
            restarted, last
        return True

    eventually(streaming_again, 60, 0.2)


def test_a_manual_address_is_dialed_and_kept_apart_from_pushed_ones(
    acceptor: LocalCluster, dialer: LocalCluster
) -> None:
    """ServerExternalAddresses (a load balancer) become the token's ManualServerAddresses: the
    dialer prefers them, and the addresses pushed over the stream never mix with them."""
    real = f"127.0.0.1:{acceptor.agents[0].peering_port}"
    tok = token(acceptor, "manual", ServerExternalAddresses=[real])
    assert establish(dialer, "manual", tok).status == 200
    wait_state(dialer, "manual", "ACTIVE")

    def pushed() -> bool:
        rec = peering(dialer.agents[0], "manual")
        assert rec is not None and rec["PeerServerAddresses"] == [UNREACHABLE], rec
        return True

    eventually(pushed, 30, 0.1)  # the manual address was reached, but it is kept apart
    wait_state(dialer, "manual", "ACTIVE")


class AlternatingBalancer:
    """A TCP load balancer on 127.0.0.1 that sends every odd connection to a follower and every
    even one to the leader, so each first try lands on a follower (which names the leader by
    an address the dialer cannot reach) and the retry through the balancer finds the leader."""

    def __init__(self, followers: list[int], leader: int) -> None:
        self.backends = followers
        self.leader = leader
        self.count = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            port = self.leader if self.count % 2 == 0 else \
                self.backends[(self.count // 2) % len(self.backends)]
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def dial_retries(agent) -> dict[str, float]:
    text = agent.call("GET", "/v1/agent/metrics?format=prometheus").text
    out = {}
    for line in text.splitlines():
        if line.startswith("peerplane_peering_reconciler_retries_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def test_an_unreachable_leader_hint_behind_a_load_balancer_is_not_backed_off(
    dialer: LocalCluster, tmp_path
) -> None:
    """dc3's servers name each other by addresses the dialer cannot reach (127.0.0.x:1, refused);
    the token carries the balancer as ServerExternalAddresses. A follower's hint that fails is
    retried at the redirect pace through the balancer, never counted as a failed dial."""
    c = LocalCluster(str(tmp_path / "dc3"), datacenter="dc3", extra_args=list(STREAM_ARGS))
    for i, agent in enumerate(c.agents):
        agent.extra_args += ["--advertise-wan", f"127.0.0.{i + 2}:1"]
    with c:
        leader = c.leader()
        lb = AlternatingBalancer([a.peering_port for a in c.followers()], leader.peering_port)
        try:
            before = dial_retries(dialer.agents[0])
            tok = token(c, "via-lb", ServerExternalAddresses=[f"127.0.0.1:{lb.port}"])
            assert establish(dialer, "via-lb", tok).status == 200
            wait_state(dialer, "via-lb", "ACTIVE")
            wait_state(c, "via-lb", "ACTIVE")
            after = dial_retries(dialer.agents[0])
            assert after.get("redirect", 0) - before.get("redirect", 0) >= 2  # hint, then LB
            assert after.get("dial", 0) == before.get("dial", 0), (before, after)
            assert lb.count >= 4  # the exchange and the stream each went follower, leader
        finally:
            lb.close()
