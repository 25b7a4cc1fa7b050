"""Raw PySyncObj: the replicated call peerplane makes, without HTTP, FSM or anything else.

Three `SyncObj` processes on 127.0.0.1, configured like peerplane's Raft node (cluster/raft.py:
RaftTiming's heartbeat, election and lease timings, batching off, a password, journal + full
dump files, commandsWaitLeader off). The leader's process runs an asyncio bridge like
peerplane's (callback -> loop.call_soon_threadsafe -> future, every call under a timeout) and
submits a ~200-byte payload to one `@replicated` method with a bounded number of calls in
flight. With `fsync` on, the journal is synced before entries count toward a quorum, the way
peerplane's `--durability fsync` (its default) does it.

    .venv/bin/python bench/raw_pysyncobj.py [--seconds 5] [--inflight 32] [--fsync]

compare.py drives it through `RawCluster`; each node process is `raw_pysyncobj.py node ...`
and speaks JSON lines on stdin/stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from pysyncobj import FAIL_REASON, SyncObjConsumer, replicated  # noqa: E402

from cluster.lease import LeaseTracker  # noqa: E402
from cluster.raft import RaftTiming, sync_conf  # noqa: E402
from cluster.raft_wall import PeerplaneSyncObj  # noqa: E402

PASSWORD = "raw-bench-secret"


# ---------------------------------------------------------------- the node process


class _Store(SyncObjConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[bytes, bytes] = {}

    @replicated
    def put(self, key: bytes, value: bytes) -> int:
        self.data[key] = value
        return len(self.data)


def _percentile(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _submit(store: _Store, loop: asyncio.AbstractEventLoop, key: bytes,
            value: bytes) -> asyncio.Future[tuple[Any, int]]:
    """The replicated call through an asyncio bridge like peerplane's: (result, FAIL_REASON)."""
    fut: asyncio.Future[tuple[Any, int]] = loop.create_future()

    def _set(res: Any, err: int) -> None:
        if not fut.done():  # a caller that timed out has cancelled it
            fut.set_result((res, err))

    def _callback(res: Any, err: int) -> None:  # tick thread (caller on QUEUE_FULL)
        loop.call_soon_threadsafe(_set, res, err)

    store.put(key, value, callback=_callback)
    return fut


async def _load(store: _Store, inflight: int, seconds: float, max_calls: int,
                payload: int, timeout: float = 5.0) -> dict[str, Any]:
    """`inflight` workers each submit, await, repeat - until `seconds` or `max_calls`."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    value = b"v" * payload
    started = time.monotonic()
    deadline = started + seconds
    issued = 0

    async def worker(w: int) -> None:
        nonlocal issued
        n = 0
        while time.monotonic() < deadline and issued < max_calls:
            issued += 1
            n += 1
            t0 = time.monotonic()
            try:
                _, err = await asyncio.wait_for(
                    _submit(store, loop, b"k-%d-%d" % (w, n), value), timeout)
            except TimeoutError:
                errors["timeout"] = errors.get("timeout", 0) + 1
                continue
            if err == FAIL_REASON.SUCCESS:
                latencies.append(time.monotonic() - t0)
            else:
                errors[str(err)] = errors.get(str(err), 0) + 1

    await asyncio.gather(*(worker(w) for w in range(inflight)))
    took = time.monotonic() - started
    return {
        "calls": len(latencies), "seconds": took,
        "p50_ms": _percentile(latencies, 50) * 1000, "p99_ms": _percentile(latencies, 99) * 1000,
        "errors": sum(errors.values()), "error_kinds": errors,
    }


async def _http(store: _Store, addr: str) -> None:
    """The floor of an HTTP write: aiohttp (as peerplane runs it: uvloop, no middleware) in
    front of the replicated call, nothing else - POST /v1/peering/token puts the body's bytes
    under a fresh key and answers a small JSON. A follower's call goes to the leader the way
    PySyncObj sends it (peerplane's subclass: batched per tick, answers riding the append)."""
    from aiohttp import web

    loop = asyncio.get_running_loop()
    seq = iter(range(1 << 62))

    async def put(request: web.Request) -> web.Response:
        body = await request.read()
        _, err = await asyncio.wait_for(_submit(store, loop, b"k-%d" % next(seq), body), 5.0)
        if err != FAIL_REASON.SUCCESS:
            return web.Response(status=500, text=f"error {err}")
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/peering/token", put)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = addr.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()


async def _serve(args: argparse.Namespace) -> None:
    os.makedirs(args.dir, exist_ok=True)
    store = _Store()
    partners = [p for p in args.partners.split(",") if p]
    # peerplane's own SyncObj subclass and settings (lease, vote guard, group commit, fsync
    # durability toggled per run below): the anchor differs from peerplane only by the HTTP.
    t = RaftTiming()
    conf = sync_conf(t, password=PASSWORD, bind_addr=args.self_addr, data_dir=args.dir)
    sync = PeerplaneSyncObj(args.self_addr, partners, conf, consumers=[store],
                            lease=LeaseTracker(), vote_guard=t.vote_guard, durable=False)
    loop = asyncio.get_running_loop()
    if args.http:
        await _http(store, args.http)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return  # the driver went away
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "status":
                reply({"leader": bool(sync._isLeader()), "ready": bool(sync.isReady()),
                       "applied": int(sync.raftLastApplied)})
            elif cmd == "fsync":
                sync.durable = bool(req["on"])
                reply({"ok": True})
            elif cmd == "bench":
                reply(await _load(store, int(req["inflight"]), float(req["seconds"]),
                                  int(req.get("max_calls", 10**9)), int(req.get("payload", 200))))
            elif cmd == "quit":
                reply({"ok": True})
                return
            else:
                reply({"error": f"unknown command {cmd!r}"})
    finally:
        sync.destroy()


# ---------------------------------------------------------------- the driver


class RawCluster:
    """Three node processes; `bench()` runs the load on whichever is leader."""

    def __init__(self, base_dir: str, nodes: int = 3, http: bool = False) -> None:
        from lab.cluster import free_ports

        self.base_dir = base_dir
        ports = free_ports(2 * nodes if http else nodes)
        self.addrs = [f"127.0.0.1:{p}" for p in ports[:nodes]]
        # with http: each node also serves POST /v1/peering/token (see _http)
        self.http_addrs = [f"127.0.0.1:{p}" for p in ports[nodes:]]
        self.procs: list[subprocess.Popen[str]] = []
        self._queues: list[queue.Queue[str]] = []

    def start(self, timeout: float = 30.0) -> RawCluster:
        for i, addr in enumerate(self.addrs):
            data_dir = os.path.join(self.base_dir, f"raw-{i + 1}")
            os.makedirs(data_dir, exist_ok=True)
            partners = ",".join(a for a in self.addrs if a != addr)
            log = open(os.path.join(data_dir, "node.log"), "w")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "node", "--self", addr,
                 "--partners", partners, "--dir", data_dir,
                 *(["--http", self.http_addrs[i]] if self.http_addrs else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True,
            )
            log.close()
            q: queue.Queue[str] = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, q), daemon=True).start()
            self.procs.append(proc)
            self._queues.append(q)
        self.leader(timeout)
        return self

    @staticmethod
    def _pump(proc: subprocess.Popen[str], q: queue.Queue[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line)

    def ask(self, i: int, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        proc = self.procs[i]
        if proc.poll() is not None:
            raise RuntimeError(f"raw node {i + 1} exited with {proc.returncode}: {self.log(i)}")
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        try:
            return json.loads(self._queues[i].get(timeout=timeout))
        except queue.Empty:
            raise RuntimeError(f"raw node {i + 1} did not answer {req}: {self.log(i)}") from None

    def log(self, i: int) -> str:
        try:
            with open(os.path.join(self.base_dir, f"raw-{i + 1}", "node.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def leader(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = [self.ask(i, {"cmd": "status"}) for i in range(len(self.procs))]
            leaders = [i for i, v in enumerate(views) if v["leader"]]
            if len(leaders) == 1 and all(v["ready"] for v in views):
                return leaders[0]
            time.sleep(0.1)
        raise RuntimeError("raw PySyncObj cluster elected no leader in time")

    def bench(self, inflight: int, seconds: float, fsync: bool,
              max_calls: int = 10**9) -> dict[str, Any]:
        for i in range(len(self.procs)):
            self.ask(i, {"cmd": "fsync", "on": fsync})
        leader = self.leader()
        return self.ask(leader, {"cmd": "bench", "inflight": inflight, "seconds": seconds,
                                 "max_calls": max_calls}, timeout=seconds + 30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(5)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    proc.kill()
                    proc.wait(5)
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

    def __enter__(self) -> RawCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    n = sub.add_parser("node", help="one SyncObj process (used by RawCluster)")
    n.add_argument("--self", dest="self_addr", required=True)
    n.add_argument("--partners", required=True)
    n.add_argument("--dir", required=True)
    n.add_argument("--http", help="also serve HTTP writes here (host:port)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--inflight", type=int, default=32)
    p.add_argument("--fsync", action="store_true")
    args = p.parse_args()
    if args.cmd == "node":
        import uvloop

        uvloop.run(_serve(args))
        return 0
    with tempfile.TemporaryDirectory() as tmp, RawCluster(tmp) as c:
        r = c.bench(args.inflight, args.seconds, args.fsync)
    print(json.dumps(r))
    return 0 if r["calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
