"""Real peerplane clusters for the lab and the tests: `peerplane agent` processes on 127.0.0.1.

Everything goes through the same CLI a user runs. Faults: SIGKILL, SIGSTOP/SIGCONT, restart
from the data dir; network partitions with `lab.netns.NetnsCluster` (one namespace per agent).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .http import Reply, call

T = TypeVar("T")

# Fast test timings: small enough for quick elections, roomy enough for a loaded 2-core box.
TEST_ARGS = ["--hold-timeout", "5"]


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def eventually(fn: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Retry fn until it returns a truthy value without raising; re-raise the last failure."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
            last = AssertionError(f"still falsy: {value!r}")
        except (AssertionError, OSError, urllib.error.URLError, ValueError, KeyError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {last}") from last


@dataclass
class Agent:
    name: str
    datacenter: str
    http_port: int
    raft_port: int
    peering_port: int
    data_dir: str
    join: list[str]
    secret_file: str
    extra_args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    netns: str | None = None  # run inside this network namespace (`ip netns exec`)
    bootstrap: bool = True  # False: --join a running cluster instead of --bootstrap-expect
    proc: subprocess.Popen[str] | None = None
    log_lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def raft_addr(self) -> str:
        return f"{self.host}:{self.raft_port}"

    @property
    def http_addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    def url(self, path: str) -> str:
        return f"http://{self.http_addr}{path}"

    def call(self, method: str, path: str, body: object = None, **kw) -> Reply:
        return call(method, self.url(path), body, **kw)

    def argv(self) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [
            *prefix, sys.executable, "-m", "peerplane_cli", "agent",
            "--node", self.name, "--datacenter", self.datacenter, "--bind", self.host,
            "--http-port", str(self.http_port), "--raft-port", str(self.raft_port),
            "--peering-port", str(self.peering_port), "--data-dir", self.data_dir,
            "--join", ",".join(self.join),
            *(["--bootstrap-expect", str(len(self.join))] if self.bootstrap else []),
            "--cluster-secret-file", self.secret_file, *TEST_ARGS, *self.extra_args,
        ]

    def start(self) -> None:
        self._ready.clear()
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log_lines.append(line)
            if " ready: " in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not self._ready.wait(timeout):
            raise AssertionError(f"{self.name} not ready; log:\n{''.join(self.log_lines[-30:])}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.running:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.running:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass(frozen=True)
class Place:
    host: str
    http_port: int
    raft_port: int
    peering_port: int
    netns: str | None = None


class LocalCluster:
    def __init__(
        self, base_dir: str, nodes: int = 3, datacenter: str = "dc1",
        extra_args: list[str] | None = None,
    ) -> None:
        self.datacenter = datacenter
        os.makedirs(base_dir, exist_ok=True)
        secret_file = os.path.join(base_dir, "cluster.secret")
        with open(secret_file, "w") as f:
            f.write(f"test-secret-{datacenter}")
        self.base_dir, self.secret_file = base_dir, secret_file
        self.extra_args = list(extra_args or [])
        places = self._places(nodes)
        join = [f"{p.host}:{p.raft_port}" for p in places]
        self.agents = [
            Agent(
                name=f"{datacenter}-server-{i + 1}", datacenter=datacenter,
                http_port=p.http_port, raft_port=p.raft_port, peering_port=p.peering_port,
                data_dir=os.path.join(base_dir, f"server-{i + 1}"), join=join,
                secret_file=secret_file, extra_args=list(extra_args or []),
                host=p.host, netns=p.netns,
            )
            for i, p in enumerate(places)
        ]

    def _places(self, nodes: int) -> list[Place]:
        """Where each agent listens: 127.0.0.1 with free ports (subclasses put them elsewhere)."""
        ports = free_ports(3 * nodes)
        return [
            Place("127.0.0.1", ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
            for i in range(nodes)
        ]

    def add_server(self, join: list[str]) -> Agent:
        """Start one more server that joins the running cluster through `join` (no
        --bootstrap-expect): it becomes a voter by itself (cluster/membership.py)."""
        p = self._places(1)[0]
        n = len(self.agents) + 1
        agent = Agent(
            name=f"{self.datacenter}-server-{n}", datacenter=self.datacenter,
            http_port=p.http_port, raft_port=p.raft_port, peering_port=p.peering_port,
            data_dir=os.path.join(self.base_dir, f"server-{n}"), join=join,
            secret_file=self.secret_file, extra_args=list(self.extra_args), host=p.host,
            netns=p.netns, bootstrap=False,
        )
        self.agents.append(agent)
        agent.start()
        agent.wait_ready()
        return agent

    def start(self) -> LocalCluster:
        for a in self.agents:
            a.start()
        for a in self.agents:
            a.wait_ready()
        self.wait_converged()
        return self

    def stop(self) -> None:
        for a in self.agents:
            a.stop()

    def by_raft(self, addr: str) -> Agent:
        return next(a for a in self.agents if a.raft_addr == addr)

    def leader(self, among: list[Agent] | None = None, timeout: float = 20.0) -> Agent:
        """The agent every running candidate names as leader (they must agree)."""
        pool = [a for a in (among or self.agents) if a.running]

        def agreed() -> Agent | None:
            views = {a.call("GET", "/v1/status/leader", timeout=2).json() for a in pool}
            if len(views) == 1 and (view := views.pop()):
                leader = self.by_raft(view)
                return leader if leader in pool else None
            return None

        return eventually(agreed, timeout)

    def admin_headers(self) -> dict[str, str]:
        """The initial management token's header, when the agents were started with one."""
        args = self.agents[0].extra_args
        flag = "--acl-initial-management-token"
        return {"X-Consul-Token": args[args.index(flag) + 1]} if flag in args else {}

    def followers(self) -> list[Agent]:
        leader = self.leader()
        return [a for a in self.agents if a is not leader and a.running]

    def wait_converged(self, timeout: float = 30.0) -> None:
        """A leader is known everywhere and every server's HTTP address is replicated, so
        every node can forward and the cluster CA exists (tokens can be generated)."""
        running = [a for a in self.agents if a.running]

        def converged() -> bool:
            self.leader(running, timeout=2)
            for a in running:
                reply = a.call("GET", "/v1/operator/raft/configuration", timeout=2,
                               headers=self.admin_headers())
                if reply.status == 403 and not self.admin_headers():
                    continue  # ACLs deny and there is no token to look: leader agreement only
                cfg = reply.json()
                if any(not s["Node"] for s in cfg["Servers"] if s["Address"] in
                       {r.raft_addr for r in running}):
                    return False
            return True

        eventually(converged, timeout)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
