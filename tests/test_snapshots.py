"""Snapshots (log compaction): PySyncObj's serializer writes them in a forked child; the wall
makes the file durable before the log entries it covers are dropped, gzips it at level 1, and
has the child - not the tick thread - take the FSM's snapshot."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import threading
import time

import pysyncobj.serializer
from raft_nodes import three_nodes, wait_leader

from cluster.commands import GenerateToken
from cluster.fsm import FSM
from cluster.raft import ForkedSnapshot, RaftTiming
from cluster.raft_wall.hooks import durable_replace
from cluster.raft_wall.syncobj import PeerplaneSyncObj


def test_the_snapshot_file_is_fsynced_then_renamed_then_its_directory_fsynced(
        tmp_path, monkeypatch):
    calls: list[str] = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd: int) -> None:
        calls.append("fsync " + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("rename") or replace(a, b))
    (tmp_path / "raft.dump.tmp").write_bytes(b"state")
    assert durable_replace(str(tmp_path / "raft.dump.tmp"), str(tmp_path / "raft.dump"))
    assert calls == ["fsync raft.dump.tmp", "rename", f"fsync {tmp_path.name}"]
    assert (tmp_path / "raft.dump").read_bytes() == b"state"


def test_pysyncobjs_serializer_renames_through_the_durable_replace():
    assert pysyncobj.serializer.atomicReplace is durable_replace


def test_a_compacting_cluster_writes_level_1_gzip_dumps_a_restarted_server_loads(tmp_path):
    timing = RaftTiming()

    async def write(nodes) -> None:
        leader = await wait_leader(nodes)
        for i in range(30):
            await leader.submit(GenerateToken(Partition="default", Name=f"p{i}", ID=f"id-{i}",
                                              EstablishmentSecret="s"), 5.0)

    with three_nodes(tmp_path, timing, compaction_entries=10) as nodes:
        asyncio.run(write(nodes))
        dump = tmp_path / "0" / "raft.dump"
        deadline = time.monotonic() + 10
        while not dump.exists():
            assert time.monotonic() < deadline, "no snapshot written"
            time.sleep(0.05)
        time.sleep(0.5)  # the child renames when done: the file is whole once it exists
        assert dump.read_bytes()[:2] == b"\x1f\x8b" and dump.read_bytes()[8] == 4  # XFL: fastest
    # What PySyncObj loads on a restart: its own deserializer, then our FSM from the bytes.
    data, _, _, _ = pysyncobj.serializer.Serializer(
        str(dump), 0, False, None, None, None).deserialize()
    fsm = FSM()
    fsm.restore(data[1]["fsm"])
    assert 1 <= len(fsm.list(partition=None)[0]) <= 30  # as of a compaction after 7-12 entries


def test_a_snapshot_pickled_in_a_forked_child_ignores_a_lock_another_thread_held():
    fsm = FSM()
    held, release = threading.Event(), threading.Event()

    def reader() -> None:  # as the event loop thread holding the FSM lock during a read
        with fsm._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=reader)
    t.start()
    held.wait(5)
    r, w = os.pipe()
    snapshot = ForkedSnapshot(fsm)  # made by the tick thread, pickled in the child
    pid = os.fork()
    if pid == 0:  # the child: the lock is held for ever here
        try:
            os.write(w, pickle.dumps(snapshot, 2))
        finally:
            os._exit(0)
    os.close(w)
    release.set()
    t.join()
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    assert pickle.loads(data) == fsm.snapshot()


def test_each_server_draws_its_own_compaction_point_within_a_quarter_of_the_configured(
        tmp_path):
    with three_nodes(tmp_path, compaction_entries=1000) as nodes:
        confs = [n._sync._SyncObj__conf for n in nodes]
        for conf in confs:
            assert 750 <= conf.logCompactionMinEntries <= 1250
            assert 225 <= conf.logCompactionMinTime <= 375  # PySyncObj's 300 s
        # Independent draws (all three the same: about 1 in 250,000)
        assert len({conf.logCompactionMinEntries for conf in confs}) > 1


def test_a_server_draws_a_new_compaction_point_after_each_compaction(tmp_path, monkeypatch):
    draws: list[int] = []
    draw = PeerplaneSyncObj._draw_compaction_point
    monkeypatch.setattr(PeerplaneSyncObj, "_draw_compaction_point",
                        lambda self: draws.append(id(self)) or draw(self))

    async def write(nodes) -> None:
        leader = await wait_leader(nodes)
        for i in range(60):
            await leader.submit(GenerateToken(Partition="default", Name=f"p{i}", ID=f"id-{i}",
                                              EstablishmentSecret="s"), 5.0)

    with three_nodes(tmp_path, compaction_entries=20) as nodes:
        asyncio.run(write(nodes))
        deadline = time.monotonic() + 10
        while not all((tmp_path / str(i) / "raft.dump").exists() for i in range(3)):
            assert time.monotonic() < deadline, "not every server wrote a snapshot"
            time.sleep(0.05)
        time.sleep(0.5)  # the tick after the child finished takes the new draw
        for n in nodes:
            assert draws.count(id(n._sync)) >= 2  # at start, then after its compaction
            assert 15 <= n._sync._SyncObj__conf.logCompactionMinEntries <= 25


def test_a_server_asks_whether_its_snapshot_child_has_exited_at_most_every_50_ms(
        tmp_path, monkeypatch):
    asked: dict[int, list[float]] = {}
    waitpid = os.waitpid

    def counted(pid: int, options: int) -> tuple[int, int]:
        asked.setdefault(threading.get_ident(), []).append(time.monotonic())
        return waitpid(pid, options)

    monkeypatch.setattr(pysyncobj.serializer.os, "waitpid", counted)
    reduce = ForkedSnapshot.__reduce__

    def slow(self: ForkedSnapshot) -> tuple[type[bytes], tuple[bytes]]:
        if os.getpid() != self.pid:
            time.sleep(0.5)  # a child that takes a while, as one does at 30,000 peerings
        return reduce(self)

    monkeypatch.setattr(ForkedSnapshot, "__reduce__", slow)

    async def write(nodes) -> None:
        leader = await wait_leader(nodes)
        for i in range(300):  # every commit ticks each server several times
            await leader.submit(GenerateToken(Partition="default", Name=f"p{i}", ID=f"id-{i}",
                                              EstablishmentSecret="s"), 5.0)

    with three_nodes(tmp_path, compaction_entries=20) as nodes:
        asyncio.run(write(nodes))
    gaps = [b - a for times in asked.values() for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 6  # each server waited for a child across several looks
    assert min(gaps) >= 0.045
