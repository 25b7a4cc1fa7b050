"""The Raft log on disk: PySyncObj's `Journal` interface over plain write() + fdatasync, with a
checksum on every entry.

Why not PySyncObj's FileJournal: it writes through an mmap, so a write to a full filesystem
kills the process with SIGBUS (no log line, and it stays down), and it has no checksums, so a
tail torn by a crash is loaded as entries. Here a failed write is an `OSError` (ENOSPC, EIO)
that puts the journal in a *failed* state - every later mutation raises `JournalError` at once,
so the node can neither acknowledge nor vote - until `try_recover()` managed to rewrite the
whole log and its metadata. On open, the first record whose length or CRC does not check out
ends the log: it and everything after it are cut off, and the node catches up from its peers.

File layout: MAGIC, then records `<u32 len><u32 crc32><u64 idx><u64 term><command>` where
`len` counts idx + term + command and the CRC covers len and the body, then zeros written ahead
(see `PREALLOCATE`). Term, vote and commit index live in `<journal>.meta` (PySyncObj's pickled
dict), replaced atomically and fsynced.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import zlib
from typing import Any

from pysyncobj.journal import Journal
from pysyncobj.pickle import dumps as pickle_dumps
from pysyncobj.pickle import loads as pickle_loads
from pysyncobj.pickle import to_bytes

log = logging.getLogger("peerplane.journal")

MAGIC = b"PPJRNL01"
_HEAD = struct.Struct("<II")  # len, crc
_BODY = struct.Struct("<QQ")  # idx, term
_OLD_MAGIC = b"PYSYNCOBJ"  # PySyncObj's FileJournal, converted on open
_OLD_FIRST, _OLD_LAST_PTR = 40, 36

Entry = tuple[bytes, int, int]  # (command, idx, term), as PySyncObj expects

# Zeros written ahead of the log's end, 1 MiB at a time; entries are then written over them. An
# fdatasync after an append that grew the file must also commit the new size - on ext4 a
# journal commit, which the three servers' syncs on one disk queue behind - while one after an
# overwrite of blocks already written flushes only the data. etcd preallocates its WAL segments
# for the same reason. On tmpfs/ramfs an fdatasync costs nothing and the space would be taken
# from a small filesystem, so nothing is written ahead there.
PREALLOCATE = 1 << 20
_MEMORY_FS = (0x01021994, 0x858458F6)  # statfs f_type of tmpfs, ramfs


def _on_memory_fs(path: str) -> bool:
    """Whether `path`'s directory is on tmpfs or ramfs (Linux statfs; False when unknown)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first field
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.statfs(os.fsencode(os.path.dirname(os.path.abspath(path))), buf) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return ctypes.c_long.from_buffer(buf).value in _MEMORY_FS


class JournalError(OSError):
    """The journal cannot be written; the node must not acknowledge or vote."""


class JournalPath(str):
    """A journal path that PySyncObj's `createJournal` turns into a ChecksummedJournal."""


def _record(command: Any, idx: int, term: int) -> bytes:
    body = _BODY.pack(idx, term) + to_bytes(command)
    length = struct.pack("<I", len(body))
    return length + struct.pack("<I", zlib.crc32(body, zlib.crc32(length))) + body


def parse(data: bytes) -> tuple[list[Entry], list[int], int]:
    """Entries, their offsets, and where the valid part of `data` ends (the first record that
    is short, fails its CRC or does not follow its predecessor's index ends it)."""
    entries: list[Entry] = []
    offsets: list[int] = []
    pos = len(MAGIC)
    while pos + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if length < _BODY.size or end > len(data):
            break
        body = data[pos + _HEAD.size:end]
        if zlib.crc32(body, zlib.crc32(data[pos:pos + 4])) != crc:
            break
        idx, term = _BODY.unpack_from(body)
        if entries and idx != entries[-1][1] + 1:
            break
        entries.append((body[_BODY.size:], idx, term))
        offsets.append(pos)
        pos = end
    return entries, offsets, pos


def _parse_pysyncobj(data: bytes) -> list[Entry]:
    """Entries of a journal written by PySyncObj's FileJournal (a data dir from before)."""
    entries: list[Entry] = []
    pos = _OLD_FIRST
    last = struct.unpack_from("<I", data, _OLD_LAST_PTR)[0]
    while pos < min(last, len(data)):
        size = struct.unpack_from("<I", data, pos)[0]
        idx, term = struct.unpack_from("<QQ", data, pos + 4)
        entries.append((data[pos + 20:pos + 4 + size], idx, term))
        pos += size + 8
    return entries


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in the directory of `path` durable."""
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (tmp, fsync, rename, fsync dir)."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)  # a partial copy must not hold on to the space
        except OSError:
            pass
        raise
    fsync_dir(path)


class ChecksummedJournal(Journal):
    def __init__(self, path: str, preallocate: int | None = None) -> None:
        """`preallocate`: bytes of zeros to write ahead (None: PREALLOCATE, or 0 on tmpfs)."""
        self.path = path
        if preallocate is None:
            preallocate = 0 if _on_memory_fs(path) else PREALLOCATE
        self._preallocate = preallocate
        self._allocated = 0  # the file's size: records up to self._end, zeros after
        self.meta_path = path + ".meta"
        self.failure: str | None = None  # why the journal cannot be written, while it cannot
        self._meta: dict[str, Any] = self._read_meta()
        self._meta_dirty = False
        # Written or truncated since the last fdatasync: heartbeats (every ReadIndex round, on
        # the leader and each follower) sync nothing new and skip the syscall.
        self._unsynced = False
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._open()

    # ---- opening, torn tails ----

    def _open(self) -> None:
        data = b""
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                data = f.read()
        if data.startswith(_OLD_MAGIC):
            entries = _parse_pysyncobj(data)
            log.info("journal %s: converting %d entries from PySyncObj's format", self.path,
                     len(entries))
            _write_file(self.path, MAGIC + b"".join(_record(*e) for e in entries))
            return self._open()
        if not data.startswith(MAGIC):
            if data:
                log.error("journal %s: unknown header %r; starting with an empty log (the "
                          "leader sends what is missing)", self.path, data[:8])
            _write_file(self.path, MAGIC)
            data = MAGIC
        self._entries, self._offsets, end = parse(data)
        self._fd = os.open(self.path, os.O_RDWR)
        self._end = end
        self._allocated = len(data)
        if data.count(0, end) != len(data) - end:  # not only zeros written ahead
            last = self._entries[-1][1] if self._entries else None
            log.error("journal %s: cut off a torn or corrupt tail: %d bytes after offset %d "
                      "(last intact entry: %s); the missing entries come from the leader",
                      self.path, len(data) - end, end, last)
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            self._allocated = end

    def _read_meta(self) -> dict[str, Any]:
        try:
            with open(self.meta_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        try:
            return dict(pickle_loads(data))
        except Exception:  # noqa: BLE001 - any garbage: unpickling raises all kinds
            # Written atomically (tmp, fsync, rename), so only a damaged disk gets here. Start
            # as PySyncObj does without a meta file (term from the log, no vote), not crash-loop.
            log.error("journal %s: unreadable metadata %s (%d bytes); starting without the "
                      "persisted term and vote", self.path, self.meta_path, len(data))
            return {}

    # ---- failure state ----

    def _check(self) -> None:
        if self.failure is not None:
            raise JournalError(errno.EIO, f"journal unavailable: {self.failure}")

    def _fail(self, exc: OSError) -> JournalError:
        reason = f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
        if self.failure is None:
            log.error("journal %s: write failed (%s); this server stops acknowledging entries "
                      "and voting until the disk is writable again", self.path, reason)
        self.failure = reason
        return JournalError(exc.errno or errno.EIO, f"journal unavailable: {reason}")

    def try_recover(self) -> bool:
        """Rewrite the log and metadata from memory; True when that worked (the disk is
        writable again). After a failed write or fsync, what the file holds is unknown, so it
        is replaced as a whole rather than appended to."""
        if self.failure is None:
            return True
        try:
            _write_file(self.path, MAGIC + b"".join(_record(*e) for e in self._entries))
            _write_file(self.meta_path, pickle_dumps(self._meta))
        except OSError:
            return False
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR)
        self._offsets, pos = [], len(MAGIC)
        for e in self._entries:
            self._offsets.append(pos)
            pos += _HEAD.size + _BODY.size + len(to_bytes(e[0]))
        self._end = self._allocated = pos
        log.warning("journal %s: writable again (%d entries rewritten; was %s); rejoining",
                    self.path, len(self._entries), self.failure)
        self.failure = None
        self._meta_dirty = False
        return True

    # ---- PySyncObj's Journal interface ----

    def add(self, command: Any, idx: int, term: int) -> None:
        self._check()
        rec = _record(command, idx, term)
        if self._end + len(rec) > self._allocated and self._preallocate:
            self._write_ahead(self._end + len(rec) + self._preallocate)
        try:
            written = 0
            while written < len(rec):
                written += os.pwrite(self._fd, rec[written:], self._end + written)
        except OSError as e:
            raise self._fail(e) from None
        self._unsynced = True
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += len(rec)

    def _write_ahead(self, size: int) -> None:
        """Zeros from the file's end up to `size` (synced with the next entries: fdatasync
        commits the new size too). A full disk ends it early without failing anything: the
        entry's own write then says whether it still fits."""
        try:
            while self._allocated < size:
                self._allocated += os.pwrite(self._fd, bytes(size - self._allocated),
                                             self._allocated)
        except OSError:
            self._allocated = os.fstat(self._fd).st_size

    def sync(self) -> None:
        """Everything added so far is on disk when this returns (raises otherwise)."""
        self._check()
        if not self._unsynced:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            raise self._fail(e) from None
        self._unsynced = False

    flush = sync

    def _truncate(self, keep: int) -> None:
        self._check()
        end = self._offsets[keep] if keep < len(self._offsets) else self._end
        try:
            os.ftruncate(self._fd, end)
        except OSError as e:
            raise self._fail(e) from None
        self._unsynced = True
        del self._entries[keep:]
        del self._offsets[keep:]
        self._end = self._allocated = end  # (the records cut off must not come back)

    def clear(self) -> None:
        self._truncate(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._truncate(max(entryFrom, 0))

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Log compaction: keep entries from `entryTo` on, replacing the file atomically. The
        kept records are copied as the bytes they are on disk (CRCs included): rebuilding each
        from memory held the tick thread - and the GIL - 25-40 ms for ~1,300 records."""
        self._check()
        start = self._offsets[entryTo] if entryTo < len(self._offsets) else self._end
        try:
            kept = self._read(start, self._end - start)
            _write_file(self.path, MAGIC + kept)
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            raise self._fail(e) from None
        os.close(self._fd)
        self._fd = fd
        shift = start - len(MAGIC)
        self._entries = self._entries[entryTo:]
        self._offsets = [offset - shift for offset in self._offsets[entryTo:]]
        self._end -= shift
        self._allocated = self._end

    def _read(self, start: int, size: int) -> bytes:
        parts, pos, end = [], start, start + size
        while pos < end:
            chunk = os.pread(self._fd, end - pos, pos)
            if not chunk:
                raise OSError(errno.EIO, f"journal {self.path} ends before offset {end}")
            parts.append(chunk)
            pos += len(chunk)
        return b"".join(parts)

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        try:
            if self.failure is None:
                os.fdatasync(self._fd)
        except OSError:
            pass
        os.close(self._fd)

    # ---- metadata: term and vote synchronously, commit index once a second ----

    def _store_meta(self) -> None:
        self._check()
        try:
            _write_file(self.meta_path, pickle_dumps(self._meta))
        except OSError as e:
            raise self._fail(e) from None
        self._meta_dirty = False

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        # Never beyond the log: a cut-off tail may have held the last committed entries.
        last = self._entries[-1][1] if self._entries else 1
        return min(int(self._meta.get("raftCommitIndex", 1)), last)

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # Memory first: PySyncObj already holds the new term, and recovery persists this dict.
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._store_meta()  # before any vote or message that reflects it is sent

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:
        # Called mid-tick: record a failure, never raise (the commit index is only a hint).
        if self._meta_dirty and self.failure is None:
            try:
                self._store_meta()
            except JournalError:
                pass
