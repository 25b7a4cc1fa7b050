"""`peerplane dev`: a local cluster of real agent processes on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time


def dev_ports(base_http: int, nodes: int, i: int) -> tuple[int, int, int]:
    """HTTP base+i, Raft base-200+i (8300...), peering base+nodes+i (8503... for 3 nodes)."""
    return base_http + i, base_http - 200 + i, base_http + nodes + i


def agent_argv(
    *, name: str, datacenter: str, http: int, raft: int, peering: int, data_dir: str,
    join: list[str], secret_file: str, nodes: int, extra: list[str] | None = None,
) -> list[str]:
    return [
        sys.executable, "-m", "peerplane_cli", "agent",
        "--node", name, "--datacenter", datacenter, "--bind", "127.0.0.1",
        "--http-port", str(http), "--raft-port", str(raft), "--peering-port", str(peering),
        "--data-dir", data_dir, "--join", ",".join(join), "--bootstrap-expect", str(nodes),
        "--cluster-secret-file", secret_file, *(extra or []),
    ]


def ensure_secret(path: str) -> str:
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(secrets.token_urlsafe(32))
        os.chmod(path, 0o600)
    return path


def run_dev(nodes: int, datacenter: str, http_port: int, data_dir: str) -> int:
    secret_file = ensure_secret(os.path.join(data_dir, "cluster.secret"))
    join = [f"127.0.0.1:{dev_ports(http_port, nodes, i)[1]}" for i in range(nodes)]
    procs: list[subprocess.Popen[str]] = []
    ready = threading.Semaphore(0)

    def pump(proc: subprocess.Popen[str], name: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()
            if " ready: " in line:
                ready.release()

    for i in range(nodes):
        http, raft, peering = dev_ports(http_port, nodes, i)
        name = f"{datacenter}-server-{i + 1}"
        argv = agent_argv(
            name=name, datacenter=datacenter, http=http, raft=raft, peering=peering,
            data_dir=os.path.join(data_dir, name), join=join, secret_file=secret_file, nodes=nodes,
        )
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        threading.Thread(target=pump, args=(proc, name), daemon=True).start()

    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for _ in range(nodes):
        while not ready.acquire(timeout=0.2):
            if stopping.is_set() or any(p.poll() is not None for p in procs):
                stopping.set()
                break
        if stopping.is_set():
            break
    if not stopping.is_set():
        addrs = ", ".join(f"http://127.0.0.1:{http_port + i}" for i in range(nodes))
        print(
            f"peerplane dev: {nodes} servers of {datacenter} running; API at {addrs}\n"
            f"  try: curl -s -XPOST http://127.0.0.1:{http_port}/v1/peering/token "
            "-d '{\"PeerName\":\"cluster-02\"}'\n  Ctrl-C stops the cluster.",
            flush=True,
        )
    while not stopping.is_set() and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    return 0
