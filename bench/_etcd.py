"""A three-member etcd cluster on 127.0.0.1 for the comparison (Debian's `etcd-server`, 3.4).

Members run with etcd's defaults (100 ms heartbeat, 1 s election timeout, fsync on), each in a
data dir of its own under the given base dir, and are always stopped by `stop()` / `with`.
Clients use the v3 JSON gateway (`/v3/kv/put`, `/v3/kv/range`, `/v3/maintenance/status`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from lab.cluster import free_ports


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def post(addr: str, path: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{addr}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class EtcdCluster:
    def __init__(self, base_dir: str, members: int = 3) -> None:
        self.binary = shutil.which("etcd")
        if self.binary is None:
            raise RuntimeError("etcd is required: apt-get install etcd-server")
        self.base_dir = base_dir
        ports = free_ports(2 * members)
        self.names = [f"m{i + 1}" for i in range(members)]
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self.token = f"bench-{os.getpid()}-{int(time.time())}"

    @property
    def client_addrs(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def argv(self, i: int) -> list[str]:
        cluster = ",".join(f"{n}=http://127.0.0.1:{p}"
                           for n, p in zip(self.names, self.peer_ports, strict=True))
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [
            self.binary or "etcd", "--name", self.names[i],
            "--data-dir", os.path.join(self.base_dir, self.names[i]),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster, "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",  # ignored on restart: the data dir has a member
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]

    def start_member(self, i: int) -> None:
        log = open(os.path.join(self.base_dir, f"{self.names[i]}.log"), "ab")  # noqa: SIM115
        self.procs[i] = subprocess.Popen(
            self.argv(i), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def running(self, i: int) -> bool:
        proc = self.procs[i]
        return proc is not None and proc.poll() is None

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        os.makedirs(self.base_dir, exist_ok=True)
        for i in range(len(self.names)):
            self.start_member(i)
        self.leader(timeout)
        return self

    def status(self, i: int) -> dict[str, Any]:
        return post(self.client_addrs[i], "/v3/maintenance/status", {}, timeout=2)

    def leader(self, timeout: float = 30.0) -> int:
        """Index of the member all running members name as leader."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                up = [i for i in range(len(self.names)) if self.running(i)]
                views = {i: self.status(i) for i in up}
                leaders = {v.get("leader") for v in views.values()}
                if len(leaders) == 1 and (lid := leaders.pop()) not in (None, "", "0"):
                    for i, v in views.items():
                        if v["header"]["member_id"] == lid:
                            return i
            except (OSError, urllib.error.URLError, KeyError, ValueError) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"etcd elected no leader within {timeout}s ({last}); "
                           f"logs in {self.base_dir}")

    def put(self, i: int, key: str, value: str, timeout: float = 5.0) -> dict[str, Any]:
        return post(self.client_addrs[i], "/v3/kv/put",
                    {"key": b64(key), "value": b64(value)}, timeout)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(i)

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
