"""Links between servers: a connect the peer never answers does not hold the link down for
the kernel's whole SYN-retry schedule (cluster/raft_wall/syncobj.py, CONNECT_TIMEOUT)."""

from __future__ import annotations

import socket
import time

from pysyncobj.tcp_connection import TcpConnection

from cluster.fsm import FSM
from cluster.raft import RaftNode, RaftTiming
from lab.cluster import free_ports


def test_a_connect_the_peer_never_answers_is_abandoned_and_dialled_again(tmp_path, monkeypatch):
    # A listener whose accept queue is full: the kernel drops further SYNs unanswered, as a
    # firewall or a partition does, and a connect to it stays pending.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    filler = socket.create_connection(silent.getsockname())
    peer = f"127.0.0.1:{silent.getsockname()[1]}"
    me = f"127.0.0.2:{free_ports(1)[0]}"  # sorts after the peer: this server dials it
    dials: list[float] = []
    connect = TcpConnection.connect

    def counted(self, host, port):
        if f"{host}:{port}" == peer:
            dials.append(time.monotonic())
        return connect(self, host, port)

    monkeypatch.setattr(TcpConnection, "connect", counted)
    node = RaftNode(self_addr=me, peers=[peer], bind_addr=me, data_dir=str(tmp_path),
                    password="secret", fsm=FSM(), timing=RaftTiming(durable=False))
    try:
        deadline = time.monotonic() + 10
        while len(dials) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Without the timeout: one dial, pending for the kernel's ~2 minutes of SYN retries.
        assert len(dials) >= 3
        assert dials[2] - dials[0] < 6  # a fresh SYN about every 2 s
    finally:
        node.destroy()
        filler.close()
        silent.close()
