"""Durability modes: with --durability fsync, an acknowledged write is on disk (not only in the
page cache) on a majority of servers; with page-cache it is not (PySyncObj's own behaviour).

"On disk" is checked as a power cut would: the three data dirs live on one ext2 filesystem on a
loop device, and right after the acknowledgement the device's backing image is copied. The loop
device has only what the kernel wrote back (fsync, or writeback ~30 s later); the page cache is
not in the copy. The journals are then read out of the copy with debugfs and parsed.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from cluster.journal import parse
from lab.cluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def loop_fs(tmp_path):
    image = tmp_path / "disk.img"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    yield image, mnt
    subprocess.run(["umount", str(mnt)], check=True)


def journal_in_image(image, server: str) -> bytes:
    out = subprocess.run(["debugfs", "-R", f"cat /{server}/raft.journal", str(image)],
                         capture_output=True, check=True)
    return out.stdout


def servers_with_write_on_disk(tmp_path, loop_fs, mode: str) -> list[str]:
    image, mnt = loop_fs
    cut = tmp_path / "power-cut.img"
    with LocalCluster(str(mnt), extra_args=["--durability", mode]) as c:
        time.sleep(1.0)  # let start-up writes (membership, CA) settle
        reply = c.leader().call("POST", "/v1/peering/token", {"PeerName": "durable"})
        shutil.copyfile(image, cut)  # the power cut: only what reached the device survives
        assert reply.status == 200, reply.text
    servers = [f"server-{i}" for i in (1, 2, 3)]
    return [s for s in servers
            if any(b"durable" in e[0] for e in parse(journal_in_image(cut, s))[0])]


def test_fsync_mode_acknowledges_only_writes_on_disk_on_a_majority(tmp_path, loop_fs):
    assert len(servers_with_write_on_disk(tmp_path, loop_fs, "fsync")) >= 2


def test_page_cache_mode_acknowledges_writes_that_are_only_in_the_page_cache(tmp_path, loop_fs):
    assert len(servers_with_write_on_disk(tmp_path, loop_fs, "page-cache")) < 2
