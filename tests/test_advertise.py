"""Addresses that work across networks: `--advertise-wan` (advertise_addr_wan) is the peering
address a server gives other clusters - in tokens, in the server addresses pushed over the peer
stream, in leader hints - and a dialer never lets a push replace the address it reached the
acceptor through with ones it cannot reach (hashicorp/consul #15051, #15763). Real one-server
clusters on loopback; the unreachable addresses are TEST-NET-1 (192.0.2.0/24, RFC 5737)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from harness.peering import STREAM_ARGS, decode, encode, establish, peering, token, wait_state
from lab.cluster import LocalCluster, eventually

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
