"""The Raft journal on disk (cluster/journal.py): entries survive reopening, a torn or corrupt
tail is cut off at the first bad record, a full filesystem is an error (never a SIGBUS) that
stops every write until space is back, PySyncObj's own journal format is converted, and entries
are written over zeros written ahead of the log's end (not on tmpfs)."""

from __future__ import annotations

import os
import subprocess

import pytest
from pysyncobj.journal import FileJournal

from cluster.journal import MAGIC, ChecksummedJournal, JournalError


def filled(path: str, n: int = 5, size: int = 40, preallocate: int = 0) -> ChecksummedJournal:
    j = ChecksummedJournal(path, preallocate)
    for i in range(1, n + 1):
        j.add(bytes([i]) * size, i, 1)
    j.sync()
    return j


def reopen(path: str, preallocate: int = 0) -> ChecksummedJournal:
    j = ChecksummedJournal(path, preallocate)
    j._destroy()
    return j


def test_entries_and_term_survive_reopening(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path)
    j.setCurrentTerm(3, "127.0.0.1:1")
    j._destroy()
    again = reopen(path)
    assert [e[1] for e in again] == [1, 2, 3, 4, 5]
    assert again[4] == (bytes([5]) * 40, 5, 1)
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (3, "127.0.0.1:1")


def test_a_truncated_last_entry_is_cut_off_and_the_file_shortened(tmp_path, caplog):
    path = str(tmp_path / "raft.journal")
    filled(path)._destroy()
    size = os.path.getsize(path)
    os.truncate(path, size - 3)
    again = reopen(path)
    assert [e[1] for e in again] == [1, 2, 3, 4]
    assert os.path.getsize(path) == size - (8 + 16 + 40)
    assert "cut off a torn or corrupt tail" in caplog.text


def test_a_flipped_byte_in_the_last_entry_is_detected_by_its_checksum(tmp_path):
    path = str(tmp_path / "raft.journal")
    filled(path)._destroy()
    with open(path, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        byte = f.read(1)
        f.seek(-10, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x01]))
    assert [e[1] for e in reopen(path)] == [1, 2, 3, 4]


def test_a_corrupt_entry_in_the_middle_ends_the_log_there(tmp_path):
    path = str(tmp_path / "raft.journal")
    filled(path)._destroy()
    third = len(MAGIC) + 2 * (8 + 16 + 40)
    with open(path, "r+b") as f:
        f.seek(third + 30)
        f.write(b"\xff")
    assert [e[1] for e in reopen(path)] == [1, 2]


RECORDS = len(MAGIC) + 5 * (8 + 16 + 40)  # the file's bytes up to the end of `filled`'s log


def test_zeros_after_the_last_entry_are_kept_as_space_written_ahead(tmp_path, caplog):
    path = str(tmp_path / "raft.journal")
    filled(path)._destroy()
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    j = ChecksummedJournal(path, 0)
    j.add(b"six", 6, 1)
    j._destroy()
    assert [e[1] for e in reopen(path)] == [1, 2, 3, 4, 5, 6]
    assert os.path.getsize(path) == RECORDS + 4096
    assert "torn" not in caplog.text


def test_entries_are_written_over_the_zeros_written_ahead_without_growing_the_file(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path, preallocate=65536)
    size = os.path.getsize(path)
    j.add(b"six", 6, 1)
    j.sync()
    assert size == len(MAGIC) + (8 + 16 + 40) + 65536  # the first entry's end, then 64 KiB
    assert os.path.getsize(path) == size
    j._destroy()
    assert [e[1] for e in reopen(path)] == [1, 2, 3, 4, 5, 6]


def test_more_zeros_are_written_ahead_when_an_entry_reaches_their_end(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path, preallocate=1024)
    j.add(b"x" * 2000, 6, 1)
    j._destroy()
    assert os.path.getsize(path) == RECORDS + (8 + 16 + 2000) + 1024
    assert [e[1] for e in reopen(path)] == [1, 2, 3, 4, 5, 6]


def test_a_torn_entry_before_the_zeros_written_ahead_is_cut_off_with_them(tmp_path, caplog):
    path = str(tmp_path / "raft.journal")
    filled(path, preallocate=65536)._destroy()
    with open(path, "r+b") as f:
        f.seek(RECORDS)
        f.write(b"\x30\x00\x00\x00garbage")  # a record's start, never finished
    assert len(reopen(path)) == 5
    assert os.path.getsize(path) == RECORDS
    assert "cut off a torn or corrupt tail" in caplog.text


def test_entries_cut_off_do_not_come_back_from_the_space_written_ahead(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path, preallocate=65536)
    j.deleteEntriesFrom(2)  # PySyncObj drops entries 3-5 (another leader's log wins)
    j._destroy()
    assert [e[1] for e in reopen(path)] == [1, 2]


def test_the_commit_index_never_points_past_a_cut_off_tail(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path)
    j.setRaftCommitIndex(5)
    j.onOneSecondTimer()
    j._destroy()
    os.truncate(path, os.path.getsize(path) - 1)
    assert reopen(path).getRaftCommitIndex() == 4


def test_unreadable_metadata_is_logged_and_the_log_still_opens(tmp_path, caplog):
    path = str(tmp_path / "raft.journal")
    j = filled(path)
    j.setCurrentTerm(4, None)
    j._destroy()
    with open(path + ".meta", "r+b") as f:
        f.write(b"\xff\x00garbage")
    again = reopen(path)
    assert len(again) == 5 and again.getCurrentTerm() == 0
    assert "unreadable metadata" in caplog.text


def test_deleting_entries_from_an_index_shortens_the_file(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path)
    j.deleteEntriesFrom(2)
    j.add(b"new", 3, 2)
    j._destroy()
    assert [(e[1], e[2]) for e in reopen(path)] == [(1, 1), (2, 1), (3, 2)]


def test_compaction_keeps_the_tail_entries(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path)
    j.deleteEntriesTo(3)
    j.add(b"six", 6, 1)
    j._destroy()
    assert [e[1] for e in reopen(path)] == [4, 5, 6]


def test_a_compacted_file_holds_the_kept_records_as_a_fresh_journal_would(tmp_path):
    compacted, fresh = str(tmp_path / "a.journal"), str(tmp_path / "b.journal")
    j = filled(compacted)
    j.deleteEntriesTo(2)
    j._destroy()
    k = ChecksummedJournal(fresh, 0)
    for i in range(3, 6):
        k.add(bytes([i]) * 40, i, 1)
    k._destroy()
    with open(compacted, "rb") as a, open(fresh, "rb") as b:
        assert a.read() == b.read()


def test_entries_after_a_compaction_are_truncated_at_the_right_offset(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path)
    j.deleteEntriesTo(2)
    j.deleteEntriesFrom(1)  # keeps entry 3 only
    j.add(b"four", 4, 2)
    j._destroy()
    assert list(reopen(path)) == [(bytes([3]) * 40, 3, 1), (b"four", 4, 2)]


def test_compacting_every_entry_leaves_an_empty_journal_that_takes_new_ones(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = filled(path)
    j.deleteEntriesTo(5)
    j.add(b"six", 6, 1)
    j._destroy()
    assert list(reopen(path)) == [(b"six", 6, 1)]


def test_a_pysyncobj_journal_is_converted_with_its_entries(tmp_path):
    path = str(tmp_path / "raft.journal")
    old = FileJournal(path)
    for i in range(1, 4):
        old.add(b"cmd%d" % i, i, 2)
    old._destroy()
    again = reopen(path)
    assert list(again) == [(b"cmd1", 1, 2), (b"cmd2", 2, 2), (b"cmd3", 3, 2)]
    with open(path, "rb") as f:
        assert f.read(len(MAGIC)) == MAGIC


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs: writes past it fail with ENOSPC."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_full_disk_fails_the_write_and_every_later_one_until_space_is_back(tiny_fs, caplog):
    path = str(tiny_fs / "raft.journal")
    j = filled(path)
    filler = tiny_fs / "filler"
    with pytest.raises(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"x" * 4096)
            f.flush()
    with pytest.raises(JournalError, match="ENOSPC"):
        for i in range(6, 100):
            j.add(b"y" * 4000, i, 1)
    assert j.failure is not None and "ENOSPC" in j.failure
    added = len(j)
    with pytest.raises(JournalError):
        j.setCurrentTerm(2, None)  # no vote can be recorded either
    with pytest.raises(JournalError):
        j.sync()
    assert not j.try_recover()
    assert "this server stops acknowledging" in caplog.text

    filler.unlink()
    assert j.try_recover()
    j.add(b"after", added + 1, 2)
    j.sync()
    j._destroy()
    again = reopen(path)
    assert len(again) == added + 1 and again[-1] == (b"after", added + 1, 2)
    assert again.getCurrentTerm() == 2  # the term taken while failing was persisted on recovery


def test_nothing_is_written_ahead_on_tmpfs(tiny_fs):
    path = str(tiny_fs / "raft.journal")
    j = ChecksummedJournal(path)  # the default: zeros ahead, except on tmpfs and ramfs
    j.add(b"one", 1, 1)
    j._destroy()
    assert os.path.getsize(path) == len(MAGIC) + 8 + 16 + 3


def test_writing_ahead_on_a_full_disk_fails_nothing_and_the_entries_still_fit(tiny_fs):
    path = str(tiny_fs / "raft.journal")
    j = ChecksummedJournal(path, 1 << 20)  # more than the 64 KiB filesystem holds
    for i in range(1, 6):
        j.add(b"z" * 1000, i, 1)
    j.sync()
    assert j.failure is None
    j._destroy()
    assert [e[1] for e in reopen(path)] == [1, 2, 3, 4, 5]
