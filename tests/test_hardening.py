"""Limits that keep one hostile client from hurting a server (issue 11), each tested against a
real three-server cluster started with short limits (`--http-read-timeout 2
--http-max-blocking-queries 3`):

- request body over 1 MiB: 413 with an exact text;
- request line over 16 KiB: 414; a header line over 8 KiB or more than 128 header lines: 431;
  other malformed HTTP: a short plain 400 (no traceback in the log, no echo of the bytes);
- a client that trickles its request head, or sends nothing, is disconnected after the read
  timeout while everybody else is served; a body that does not arrive in time: 408;
- more blocking queries than the cap: 429, on the leader and on a follower;
- the peer stream (TLS port): oversized and malformed frames, garbage before the Open, a wrong
  stream secret (refused before anything is recorded), a malformed frame inside an
  authenticated stream (Error frame with the reason, close code 1007), deep, oversized or
  slow secret-exchange bodies.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import ssl
import threading
import time

import aiohttp
import msgpack
import pytest

from lab.cluster import Agent, LocalCluster, eventually

pytestmark = pytest.mark.integration

READ_TIMEOUT = 2.0
MAX_BLOCKING = 3
ONE_MIB = 1 << 20


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory):
    args = ["--http-read-timeout", str(READ_TIMEOUT),
            "--http-max-blocking-queries", str(MAX_BLOCKING)]
    with LocalCluster(str(tmp_path_factory.mktemp("hard")), extra_args=args) as c:
        yield c


def connect(agent: Agent) -> socket.socket:
    return socket.create_connection((agent.host, agent.http_port), timeout=10)


def exchange(agent: Agent, data: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the whole answer (the server closes), parse status/headers/body."""
    with connect(agent) as s:
        s.sendall(data)
        s.settimeout(timeout)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return status, headers, body


def closed_within(sock: socket.socket, limit: float, trickle: bytes | None = None) -> float:
    """Seconds until the server closes `sock` (sending one byte of `trickle` every 0.25 s
    meanwhile); fails if it is still open after `limit`."""
    started = time.monotonic()
    pos = 0
    while time.monotonic() - started < limit:
        readable, _, _ = select.select([sock], [], [], 0.25)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except ConnectionError:
                return time.monotonic() - started
        if trickle is not None and pos < len(trickle):
            try:
                sock.sendall(trickle[pos:pos + 1])
            except (BrokenPipeError, ConnectionError):
                return time.monotonic() - started
            pos += 1
    raise AssertionError(f"connection still open after {limit} s")


def no_parser_tracebacks(cluster: LocalCluster) -> None:
    for agent in cluster.agents:
        bad = [line for line in agent.log_lines
               if "Traceback" in line or "Error handling request" in line]
        assert not bad, bad[:3]


# ---- sizes ----


@pytest.mark.parametrize("path", ["/v1/peering/token", "/v1/peering/establish"])
def test_a_body_over_one_mib_is_413_with_the_limit_in_the_text(hard, path):
    too_big = b'{"PeerName":"' + b"a" * ONE_MIB + b'"}'
    for agent in hard.agents:
        reply = agent.call("POST", path, raw=too_big)
        assert reply.status == 413
        assert reply.text == f"Request body too large (limit: {ONE_MIB} bytes)"
        assert reply.headers["Content-Type"].startswith("text/plain")


def test_a_request_line_over_16_kib_is_414(hard):
    agent = hard.agents[1]
    line = b"GET /v1/peerings?filter=" + b"a" * 16384 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, headers, body = exchange(agent, line)
    assert (status, body) == (414, b"URI too long (limit: 16384 bytes)")
    assert headers["Content-Type"].startswith("text/plain")
    # just under the limit is served
    ok = b"GET /v1/peerings?filter=" + b"a" * 16000 + b" HTTP/1.1\r\nHost: x\r\n" \
         b"Connection: close\r\n\r\n"
    assert exchange(agent, ok)[0] == 200


def test_a_header_line_over_8_kib_is_431(hard):
    data = b"GET /v1/peerings HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n"
    status, _, body = exchange(hard.agents[0], data)
    assert (status, body) == (
        431, b"Request header fields too large (limit: 8192 bytes per header line)")


def test_more_than_128_header_lines_is_431(hard):
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(130))
    status, _, body = exchange(hard.agents[2], b"GET /v1/peerings HTTP/1.1\r\nHost: x\r\n"
                               + many + b"\r\n")
    assert (status, body) == (431, b"Request header fields too large (limit: 128 header lines)")


@pytest.mark.parametrize(("data", "text"), [
    (b"GARBAGE\r\n\r\n", b"Bad request: Invalid method encountered"),
    (b"GET /v1/peerings HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
     b"Bad request: Invalid character in Content-Length"),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
     None),
])
def test_malformed_http_is_a_short_plain_400_without_a_traceback(hard, data, text):
    status, headers, body = exchange(hard.agents[0], data)
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")
    assert body.startswith(b"Bad request: ")
    if text is not None:
        assert body == text
    assert b"\\x" not in body and b"bytearray" not in body  # the bytes are not echoed
    no_parser_tracebacks(hard)


# ---- slow clients ----


def test_a_client_trickling_its_head_is_cut_off_while_others_are_served(hard):
    agent = hard.agents[0]
    slow = [connect(agent) for _ in range(20)]
    head = b"GET /v1/peerings HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100
    results: dict[int, float] = {}

    def trickle(i: int, sock: socket.socket) -> None:
        results[i] = closed_within(sock, READ_TIMEOUT + 8, trickle=head)

    threads = [threading.Thread(target=trickle, args=(i, s)) for i, s in enumerate(slow)]
    for t in threads:
        t.start()
    served = 0
    while any(t.is_alive() for t in threads):
        for a in hard.agents:
            assert a.call("GET", "/v1/peerings", timeout=5).status == 200
            served += 1
        time.sleep(0.1)
    for t in threads:
        t.join()
    for s in slow:
        s.close()
    assert len(results) == len(slow)  # every one was disconnected within the bound
    assert min(results.values()) >= READ_TIMEOUT * 0.9
    assert served >= 3


def test_a_connection_that_sends_nothing_is_closed(hard):
    with connect(hard.agents[1]) as s:
        closed_within(s, READ_TIMEOUT + 8)


def test_a_body_that_does_not_arrive_in_time_is_408(hard):
    with connect(hard.agents[2]) as s:
        s.sendall(b"POST /v1/peering/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"Content-Type: application/json\r\n\r\n" + b'{"PeerName":')
        s.settimeout(READ_TIMEOUT + 8)
        raw = b""
        while chunk := s.recv(65536):  # the server answers and closes
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert body == b"Timed out reading the request body (limit: 2 s)"


def test_keep_alive_requests_still_work(hard):
    with connect(hard.agents[0]) as s:
        for _ in range(3):
            s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 ")


# ---- blocking queries ----


class Waiter(threading.Thread):
    """One blocking query (`wait=30s`) in a thread; `status` once it has an answer."""

    def __init__(self, agent: Agent, index: int) -> None:
        super().__init__(daemon=True)
        self.agent, self.index, self.status = agent, index, 0

    def run(self) -> None:
        reply = self.agent.call("GET", f"/v1/peerings?index={self.index}&wait=30s", timeout=60)
        self.status = reply.status


@pytest.mark.parametrize("where", ["leader", "follower"])
def test_blocking_queries_over_the_cap_are_429(hard, where):
    agent = hard.leader() if where == "leader" else hard.followers()[0]
    index = int(agent.call("GET", "/v1/peerings").headers["X-Consul-Index"])
    waiters = [Waiter(agent, index) for _ in range(MAX_BLOCKING)]
    for w in waiters:
        w.start()

    def refused() -> bool:
        # A waiter that arrived after a probe took its slot was refused: send it again.
        for i, w in enumerate(waiters):
            if not w.is_alive():
                assert w.status == 429
                waiters[i] = Waiter(agent, index)
                waiters[i].start()
        time.sleep(0.5)
        if not all(w.is_alive() for w in waiters):
            return False
        reply = agent.call("GET", f"/v1/peerings?index={index}&wait=100ms")
        return reply.status == 429 and reply.text == (
            f"Too many concurrent blocking queries (limit: {MAX_BLOCKING}); retry later")

    eventually(refused, timeout=20)
    # everything else is still served, writes included; the write wakes the waiters
    assert agent.call("GET", "/v1/peerings").status == 200
    reply = agent.call("POST", "/v1/peering/token", {"PeerName": f"cap-{where}"})
    assert reply.status == 200, reply.text
    for w in waiters:
        w.join(30)
    assert [w.status for w in waiters] == [200] * MAX_BLOCKING
    # the slots are free again
    eventually(lambda: agent.call("GET", f"/v1/peerings?index={index}&wait=100ms").status == 200)


# ---- the peer stream ----


def _no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peering_url(agent: Agent, path: str, scheme: str = "https") -> str:
    return f"{scheme}://{agent.host}:{agent.peering_port}{path}"


async def test_a_secret_exchange_body_nested_too_deep_is_a_400(hard):
    leader = hard.leader()
    async with aiohttp.ClientSession() as session:
        for body in (b"[" * 60000, b'{"PeerID":' * 5000):
            async with session.post(peering_url(leader, "/peerstream/v1/exchange-secret"),
                                    data=body, ssl=_no_verify()) as resp:
                assert resp.status == 400
                assert await resp.json() == {"Code": "InvalidArgument",
                                             "Message": "malformed exchange request"}
        async with session.post(peering_url(leader, "/peerstream/v1/exchange-secret"),
                                data=b"x" * ((64 << 10) + 1), ssl=_no_verify()) as resp:
            assert resp.status == 413
            assert await resp.json() == {
                "Code": "InvalidArgument",
                "Message": "exchange request too large (limit: 65536 bytes)"}
    no_parser_tracebacks(hard)


def test_a_secret_exchange_body_that_does_not_arrive_is_408(hard):
    leader = hard.leader()
    raw = socket.create_connection((leader.host, leader.peering_port), timeout=20)
    with _no_verify().wrap_socket(raw) as s:
        s.sendall(b"POST /peerstream/v1/exchange-secret HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100\r\n\r\n{")
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ssl.SSLError, ConnectionError):  # closed without TLS close_notify
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body) == {"Code": "InvalidArgument",
                                "Message": "timed out reading the exchange request"}


async def _first_answer(agent: Agent, payload: bytes) -> tuple[dict | None, int | None]:
    """Open a stream, send one binary message, return the first frame and the close code."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(peering_url(agent, "/peerstream/v1/stream", "wss"),
                                      ssl=_no_verify(), max_msg_size=0) as ws:
            await ws.send_bytes(payload)
            frame = None
            while True:
                msg = await ws.receive(timeout=15)
                if msg.type == aiohttp.WSMsgType.BINARY and frame is None:
                    frame = msgpack.unpackb(msg.data)
                    continue
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                    return frame, ws.close_code


@pytest.mark.parametrize("payload", [
    b"\xc1garbage", msgpack.packb([1, 2, 3]), msgpack.packb({"Type": 7}), b"\x91" * 100_000,
    msgpack.packb({"Type": "Heartbeat"}),
])
async def test_anything_but_an_open_first_is_refused_with_a_reason(hard, payload):
    frame, _ = await _first_answer(hard.leader(), payload)
    assert frame == {"Type": "Error", "Code": "InvalidArgument",
                     "Message": "first message when initiating a peering must be: Open"}


async def test_a_frame_over_the_limit_closes_the_stream_as_too_big(hard):
    leader = hard.leader()
    frame, code = await _first_answer(leader, b"\x00" * ((8 << 20) + 1))
    # 1009 "too big" as the server closes; or 1006 when the close frame is lost because the
    # server drops the connection with the rest of the message unread
    assert frame is None
    assert code in (aiohttp.WSCloseCode.MESSAGE_TOO_BIG, aiohttp.WSCloseCode.ABNORMAL_CLOSURE)
    # the listener is fine
    frame, _ = await _first_answer(leader, msgpack.packb({"Type": "Open"}))
    assert frame["Code"] == "InvalidArgument"


def _generate(agent: Agent, name: str) -> dict:
    reply = agent.call("POST", "/v1/peering/token", {"PeerName": name})
    assert reply.status == 200, reply.text
    return json.loads(base64.b64decode(reply.json()["PeeringToken"]))


async def test_a_wrong_stream_secret_is_refused_before_anything_is_recorded(hard):
    leader = hard.leader()
    token = _generate(leader, "wrong-secret")
    before = leader.call("GET", "/v1/peering/wrong-secret").json()
    frame, _ = await _first_answer(leader, msgpack.packb({
        "Type": "Open", "PeerID": token["PeerID"], "StreamSecretID": "not-the-secret",
        "Remote": {"Partition": "default", "Datacenter": "evil"}}))
    assert frame["Type"] == "Error" and frame["Code"] == "PermissionDenied"
    after = leader.call("GET", "/v1/peering/wrong-secret").json()
    assert after == before  # same state, index, Remote; no stream status recorded
    assert after["StreamStatus"]["LastReceive"] is None


async def test_a_malformed_frame_in_an_open_stream_is_closed_with_the_reason(hard):
    leader = hard.leader()
    token = _generate(leader, "malformed-mid-stream")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            peering_url(leader, "/peerstream/v1/exchange-secret"), ssl=_no_verify(),
            json={"PeerID": token["PeerID"], "EstablishmentSecret": token["EstablishmentSecret"]},
        ) as resp:
            assert resp.status == 200, await resp.text()
            stream_secret = (await resp.json())["StreamSecret"]
        async with session.ws_connect(peering_url(leader, "/peerstream/v1/stream", "wss"),
                                      ssl=_no_verify()) as ws:
            await ws.send_bytes(msgpack.packb({
                "Type": "Open", "PeerID": token["PeerID"], "StreamSecretID": stream_secret,
                "Remote": {"Partition": "default", "Datacenter": "dc9"}}))
            first = await ws.receive(timeout=15)
            assert msgpack.unpackb(first.data)["Type"] == "Heartbeat"
            await ws.send_bytes(b"\xc1 not msgpack")
            frames = []
            while True:
                msg = await ws.receive(timeout=15)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames.append(msgpack.unpackb(msg.data))
                    continue
                break
            errors = [f for f in frames if f["Type"] == "Error"]
            assert errors and errors[0]["Code"] == "InvalidArgument"
            assert errors[0]["Message"].startswith("invalid frame: malformed msgpack")
            assert ws.close_code == aiohttp.WSCloseCode.INVALID_TEXT
    no_parser_tracebacks(hard)
