"""What the wall swaps into PySyncObj: our journal, a transport that stamps send times for the
lease, the wake-up pipe batched per event-loop pass, and a cheaper per-message codec (frames
and Fernet tokens exactly as PySyncObj's own, see `StoredZlib` and `VerifyOnceFernet`)."""

from __future__ import annotations

import base64
import pickle
import struct
import time
import zlib
from typing import Any

import pysyncobj.pickle as _pysyncobj_pickle
import pysyncobj.syncobj as _pysyncobj
import pysyncobj.tcp_connection as _tcp_connection
from pysyncobj.transport import TCPTransport

from ..journal import ChecksummedJournal, JournalPath
from ..lease import LeaseTracker


def timed_transport(lease: LeaseTracker) -> Any:
    class _TimedTransport(TCPTransport):
        # While the leader drains its command queue: answers to followers' commands, kept to
        # go out as one message per follower (PeerplaneSyncObj._checkCommandsToApply).
        held_responses: dict[Any, list[Any]] | None = None

        def send(self, node: Any, message: Any) -> bool:
            held = self.held_responses
            if (held is not None and isinstance(message, dict)
                    and message.get("type") == "apply_command_response"):
                held.setdefault(node, []).append(message)
                return True
            at = time.monotonic()
            ok = super().send(node, message)
            if ok and isinstance(message, dict) and message.get("type") == "append_entries":
                lease.on_sent(node, at)
            return ok

    return _TimedTransport


_create_journal = _pysyncobj.createJournal


def _journal_for(journal_file: Any) -> Any:
    """PySyncObj builds its journal itself (`createJournal(conf.journalFile)`); a JournalPath
    gets ours: write() + fdatasync instead of an mmap, CRC per entry (cluster/journal.py)."""
    if isinstance(journal_file, JournalPath):
        return ChecksummedJournal(journal_file)
    return _create_journal(journal_file)


_pysyncobj.createJournal = _journal_for


# ---- the per-message codec of TcpConnection: pickle -> zlib -> Fernet, and back ----


class WirePickle:
    """Stands in for `pysyncobj.pickle` in pysyncobj.tcp_connection (messages) and
    pysyncobj.syncobj (log entries: each command as `(method, args, kwargs)`). PySyncObj pickles
    with protocol 2, where `bytes` (our msgpack command; every entry an append_entries carries)
    become latin-1 text re-encoded as UTF-8 plus a `_codecs.encode` call to undo it: more bytes,
    and 5x slower both ways (a command: dumps 1.3 -> 0.2 us, loads 1.0 -> 0.2 us). Protocol 4
    carries them as they are; `pickle.loads` reads any protocol, so journals written before
    read as ever, and every receiver and replica decodes with PySyncObj's own `loads`.
    Snapshots are pickled by PySyncObj's serializer as before."""

    @staticmethod
    def dumps(obj: Any, protocol: int | None = None) -> bytes:
        return pickle.dumps(obj, 4)

    loads = staticmethod(_pysyncobj_pickle.loads)


_STORED_MAX = 16 * 1024  # larger (catch-up) messages are still compressed; < 64 KB: one block
_ZLIB_HEAD = b"\x78\x01"  # deflate, 32K window, no dictionary (a valid header check)
_BLOCK = struct.Struct("<BHH")  # BFINAL=1 BTYPE=00, LEN, NLEN
_ADLER = struct.Struct(">I")
_STORED_OVERHEAD = len(_ZLIB_HEAD) + _BLOCK.size + _ADLER.size


class StoredZlib:
    """Stands in for the `zlib` module in pysyncobj.tcp_connection. `zlib.compress(data, 3)`
    costs ~15 us even for a 300-byte message (setting up deflate's 256 KB state), more than
    pickling and encrypting it; Raft messages under load are small, and on the wire they are
    encrypted anyway. A message up to 16 KB therefore goes out as a zlib stream of one stored
    (uncompressed) block - still a zlib stream any PySyncObj receiver decompresses - and a
    larger one (catch-up) is compressed as before. `decompress` reads such a stream without
    setting up inflate, checking its Adler-32, and hands anything else to zlib."""

    error = zlib.error

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        n = len(data)
        if n > _STORED_MAX:
            return zlib.compress(data, level)
        return b"".join((_ZLIB_HEAD, _BLOCK.pack(1, n, n ^ 0xFFFF), data,
                         _ADLER.pack(zlib.adler32(data))))

    @staticmethod
    def decompress(data: bytes) -> bytes:
        if data[:3] == b"\x78\x01\x01" and len(data) >= _STORED_OVERHEAD:
            _, n, check = _BLOCK.unpack_from(data, 2)
            if n ^ check == 0xFFFF and len(data) == n + _STORED_OVERHEAD:
                body = data[7:7 + n]
                if _ADLER.unpack_from(data, 7 + n)[0] == zlib.adler32(body):
                    return body
        return zlib.decompress(data)


class VerifyOnceFernet:
    """PySyncObj's Fernet, with each received token authenticated once instead of twice.

    TcpConnection reads a message with `extract_timestamp(token)` (Fernet decodes the token and
    checks its HMAC) and then `decrypt(token)` (decodes and checks the HMAC again, then
    decrypts). Here `extract_timestamp` does the full `Fernet.decrypt` - authentication first,
    as always - and keeps the plaintext for the `decrypt` of that same token object that
    follows. Tokens, keys and checks are Fernet's own: the wire is unchanged."""

    def __init__(self, fernet: Any) -> None:
        self.fernet = fernet
        self._last: tuple[Any, bytes] = (None, b"")

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return self.fernet.encrypt_at_time(data, current_time)

    def extract_timestamp(self, token: bytes) -> int:
        plain = self.fernet.decrypt(token)  # raises InvalidToken unless authentic
        self._last = (token, plain)
        # The first 12 base64 characters are the version byte and the 8-byte timestamp,
        # covered by the HMAC just checked.
        return int.from_bytes(base64.urlsafe_b64decode(token[:12])[1:9], "big")

    def decrypt(self, token: bytes, ttl: int | None = None) -> bytes:
        last = self._last  # one read: another thread's token never matches this one
        if ttl is None and last[0] is token:
            return last[1]
        return self.fernet.decrypt(token, ttl)


_get_encryptor = _pysyncobj.getEncryptor


def _verify_once_encryptor(password: Any) -> VerifyOnceFernet:
    return VerifyOnceFernet(_get_encryptor(password))


_pysyncobj.getEncryptor = _verify_once_encryptor
_tcp_connection.zlib = StoredZlib  # type: ignore[assignment]
_tcp_connection.pickle = WirePickle  # type: ignore[assignment]
_pysyncobj.pickle = WirePickle  # type: ignore[assignment]


class HeldWakeups:
    """PySyncObj's wake-up pipe (written for every queued command), written once per batch
    while the event loop holds it: commands submitted in one loop pass wake the tick thread
    once and are drained - sent and synced - together, instead of a GIL hand-off each."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.held = False
        self.pending = False
        self.written = 0  # wake-ups written to the pipe

    def notify(self) -> None:
        if self.held:
            self.pending = True
            return
        self.written += 1
        try:
            self.pipe.notify()
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def release(self) -> None:
        self.held = False
        if self.pending:
            self.pending = False
            self.notify()
