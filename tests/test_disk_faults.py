"""Disk faults on real servers: a data dir on a 2 MB tmpfs that fills up, and journals torn or
corrupted while a server was down.

A server whose journal cannot be written takes no part in Raft (it neither acknowledges entries
nor votes), says why in its log and on its API (503), and rejoins once space is back; a torn
tail is cut off on restart and refilled from the leader.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cluster.journal import parse
from lab.cluster import Agent, LocalCluster, eventually

pytestmark = pytest.mark.integration

DISK_FULL = (
    "Server unavailable: its Raft journal cannot be written (ENOSPC: No space left on device); "
    "it takes no part in the cluster until the disk is writable again - use another server"
)


@contextmanager
def tiny_disks(cluster: LocalCluster, *agents: Agent, size: str = "2m") -> Iterator[None]:
    for a in agents:
        os.makedirs(a.data_dir, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", a.data_dir],
                       check=True)
    try:
        yield
    finally:
        cluster.stop()
        for a in agents:
            subprocess.run(["umount", "-l", a.data_dir], check=True)


def fill(agent: Agent) -> str:
    """Take every free byte of the agent's data dir; returns the filler's path."""
    filler = os.path.join(agent.data_dir, "filler")
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    return filler


def create(agent: Agent, name: str):
    return agent.call("POST", "/v1/peering/token", {"PeerName": name}, timeout=15)


def stale_names(agent: Agent) -> set[str]:
    reply = agent.call("GET", "/v1/peerings?stale", timeout=5)
    assert reply.status == 200, (reply.status, reply.text)
    return {p["Name"] for p in reply.json()}


def journal_failure(agent: Agent) -> str:
    return agent.call("GET", "/v1/agent/self", timeout=5).json()["Stats"]["raft"][
        "journal_failure"]


def test_a_follower_with_a_full_disk_stops_says_why_and_rejoins_when_space_is_back(tmp_path):
    c = LocalCluster(str(tmp_path))
    with tiny_disks(c, *c.agents):
        c.start()
        leader, victim = c.leader(), c.followers()[0]
        filler = fill(victim)
        for i in range(20):
            assert create(leader, f"while-full-{i}").status == 200
        eventually(lambda: journal_failure(victim).startswith("ENOSPC"), timeout=10)
        reply = victim.call("GET", "/v1/peerings", timeout=5)
        assert (reply.status, reply.text) == (503, DISK_FULL)
        assert any("write failed (ENOSPC" in line for line in victim.log_lines)
        assert victim.running

        os.unlink(filler)
        eventually(lambda: journal_failure(victim) == "", timeout=10)
        expected = {f"while-full-{i}" for i in range(20)}
        eventually(lambda: expected <= stale_names(victim), timeout=20)
        assert create(victim, "after").status == 200
        assert any("writable again" in line for line in victim.log_lines)


def test_a_leader_with_a_full_disk_steps_down_and_the_others_carry_on(tmp_path):
    c = LocalCluster(str(tmp_path))
    with tiny_disks(c, *c.agents):
        c.start()
        old = c.leader()
        others = [a for a in c.agents if a is not old]
        filler = fill(old)
        create(others[0], "first-after-fill")  # its outcome may be unknown: the leader failed
        eventually(lambda: journal_failure(old).startswith("ENOSPC"), timeout=10)
        new = c.leader(among=others)
        assert new is not old
        eventually(lambda: create(others[1], "on-new-leader").status == 200, timeout=15)
        assert (old.call("POST", "/v1/peering/token", {"PeerName": "x"}).text) == DISK_FULL

        os.unlink(filler)
        eventually(lambda: "on-new-leader" in stale_names(old), timeout=20)
        assert c.leader() is new  # it came back as a follower


def test_with_a_majority_of_disks_full_no_write_is_acknowledged_until_space_is_back(tmp_path):
    c = LocalCluster(str(tmp_path))
    with tiny_disks(c, *c.agents):
        c.start()
        leader = c.leader()
        followers = [a for a in c.agents if a is not leader]
        fillers = [fill(a) for a in followers]
        # The first entries may still fit in the journal's last, partly used page (and are
        # then on disk); the next ones fail on both followers.
        for i in range(50):
            if all(journal_failure(a) for a in followers):
                break
            create(leader, f"filling-{i}")
        assert all(journal_failure(a).startswith("ENOSPC") for a in followers)
        replies = [create(leader, f"unpersisted-{i}") for i in range(3)]
        assert [r.status for r in replies] == [503, 503, 503], [r.text for r in replies]

        for f in fillers:
            os.unlink(f)
        eventually(lambda: create(c.agents[0], "after-space-is-back").status == 200, timeout=30)
        eventually(lambda: all("after-space-is-back" in stale_names(a) for a in c.agents))


def damage_last_entry(path: str, how: str) -> None:
    """Cut off the last record's final bytes (and the zeros written ahead after it), or flip
    one of them."""
    with open(path, "rb") as f:
        size = parse(f.read())[2]  # where the last record ends
    if how == "truncated":
        os.truncate(path, size - 5)
        return
    with open(path, "r+b") as f:
        f.seek(size - 3)
        byte = f.read(1)
        f.seek(size - 3)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_journal_tail_is_cut_off_on_restart_and_refilled_from_the_leader(
        tmp_path, how):
    with LocalCluster(str(tmp_path)) as c:
        leader = c.leader()
        for i in range(10):
            assert create(leader, f"before-{i}").status == 200
        victim = c.followers()[0]
        eventually(lambda: "before-9" in stale_names(victim))
        victim.kill()
        damage_last_entry(os.path.join(victim.data_dir, "raft.journal"), how)
        assert create(leader, "while-down").status == 200

        victim.log_lines.clear()
        victim.start()
        victim.wait_ready()
        expected = {f"before-{i}" for i in range(10)} | {"while-down"}
        eventually(lambda: expected <= stale_names(victim), timeout=20)
        assert any("cut off a torn or corrupt tail" in line for line in victim.log_lines)
        assert victim.running
        assert create(victim, "after-restart").status == 200
