"""Durability modes: with --durability fsync, an acknowledged write is on disk (not only in the
page cache) on a majority of servers; with page-cache it is not (PySyncObj's own behaviour)."""

from __future__ import annotations

import re
import time

import pytest

from lab.cluster import LocalCluster

pytestmark = pytest.mark.integration


def unsynced_journal_kb(pid: int) -> int:
    """Dirty (written, not yet synced) pages of the Raft journal's mmap in a server process."""
    with open(f"/proc/{pid}/smaps") as f:
        blocks = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", f.read())
    total = 0
    for block in blocks:
        if "raft.journal" in block.splitlines()[0]:
            for field in ("Shared_Dirty", "Private_Dirty"):
                total += int(re.search(rf"{field}:\s+(\d+) kB", block).group(1))
    return total


def acknowledged_write_then_dirty_pages(tmp_path, mode: str) -> list[int]:
    with LocalCluster(str(tmp_path), extra_args=["--durability", mode]) as c:
        time.sleep(1.0)  # let start-up writes (membership, CA) settle
        reply = c.leader().call("POST", "/v1/peering/token", {"PeerName": "durable"})
        dirty = [unsynced_journal_kb(a.proc.pid) for a in c.agents]
        assert reply.status == 200, reply.text
        return dirty


def test_fsync_mode_acknowledges_only_writes_synced_on_a_majority(tmp_path):
    dirty = acknowledged_write_then_dirty_pages(tmp_path, "fsync")
    assert sum(1 for kb in dirty if kb == 0) >= 2, dirty


def test_page_cache_mode_acknowledges_writes_that_are_only_in_the_page_cache(tmp_path):
    dirty = acknowledged_write_then_dirty_pages(tmp_path, "page-cache")
    assert sum(1 for kb in dirty if kb > 0) >= 2, dirty
