"""What the wall swaps into PySyncObj: our journal, a transport that stamps send times for the
lease, the wake-up pipe batched per event-loop pass, a cheaper per-message codec
(PySyncObj's frames; AES-GCM in place of Fernet, see `StoredZlib` and `RaftCipher`), and a
snapshot file that is on disk before the log entries it replaces are dropped."""

from __future__ import annotations

import functools
import gzip
import itertools
import os
import pickle
import struct
import time
import zlib
from typing import Any

import pysyncobj.encryptor as _pysyncobj_encryptor
import pysyncobj.pickle as _pysyncobj_pickle
import pysyncobj.serializer as _serializer
import pysyncobj.syncobj as _pysyncobj
import pysyncobj.tcp_connection as _tcp_connection
import pysyncobj.utility as _pysyncobj_utility
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj.transport import TCPTransport

from ..journal import ChecksummedJournal, JournalPath, fsync_dir
from ..lease import LeaseTracker


def timed_transport(lease: LeaseTracker) -> Any:
    class _TimedTransport(TCPTransport):
        # While the leader drains its command queue and sends the appends: answers to
        # followers' commands, per follower, to ride on the first append to it (emptied
        # there; the rest go out alone - PeerplaneSyncObj._checkCommandsToApply).
        held_responses: dict[Any, list[Any]] | None = None

        def send(self, node: Any, message: Any) -> bool:
            held = self.held_responses
            if (held is not None and isinstance(message, dict)
                    and message.get("type") == "apply_command_response"):
                held.setdefault(node, []).append(message)
                return True
            conn = self._connections.get(node)
            if conn is not None and conn.encryptor is not None and conn.sendRandKey is None:
                # An outgoing connection counts as connected before its key exchange is done;
                # a message sent then would reach the other side where it expects our address,
                # and it drops the connection. Not sent: the caller retries as on a dead link.
                return False
            if (held and isinstance(message, dict) and held.get(node)
                    and message.get("type") == "append_entries"):
                message = dict(message, answers=held[node])
                held[node] = []
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


# ---- snapshots (log compaction): PySyncObj's Serializer, in a forked child ----
# The child pickles the state, gzips it into <dump>.tmp and renames that over the dump; when
# it exits 0 the parent drops the log entries the dump covers (our journal rewrites and
# fsyncs itself). PySyncObj's rename fsyncs nothing, so a power cut could leave a renamed but
# empty dump behind a journal that no longer holds those entries: committed writes gone on
# that server. And it gzips at level 9: at 50,000 peerings 0.7 s of CPU in each server's
# child at once, every compaction (level 1: 0.14 s, 10 % larger).


def durable_replace(tmp: str, path: str) -> bool:
    """PySyncObj's atomicReplace, made durable: the file's data, then the rename."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path)
    return True


class FastGzip:
    """Stands in for the `gzip` module in pysyncobj.serializer (reading is unchanged)."""

    GzipFile = functools.partial(gzip.GzipFile, compresslevel=1)


_serializer.atomicReplace = durable_replace
_serializer.gzip = FastGzip  # type: ignore[assignment]


# ---- the per-message codec of TcpConnection: pickle -> zlib -> encryptor, and back ----


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


class RaftCipher:
    """The encryptor PySyncObj's TcpConnection and TcpUtility use, in place of Fernet.

    Fernet (AES-CBC, HMAC-SHA256, base64, a new Cipher context per call) cost ~44 us to encrypt
    and decrypt one message here - several times a write, on every server. This is AES-256-GCM,
    one C call each way (~3 us), with the interface TcpConnection calls: `encrypt_at_time(data,
    t)`, `extract_timestamp(token)` (authenticates and decrypts; the plaintext is kept for the
    `decrypt` of the same token that follows) and `decrypt(token)`.

    - Key: PySyncObj's own PBKDF2 of the cluster password (its salt and iterations), then
      HKDF-SHA256 to a key of this format alone.
    - Token: version byte, 12-byte nonce, ciphertext of (8-byte timestamp + data) with its tag;
      the version byte is authenticated too. TcpConnection still checks that timestamps do not
      go back, and the per-connection random key inside the message as before.
    - Nonces never repeat under the key: each encryptor counts up from a random 96-bit start,
      so two servers (or two runs of one) would have to start within a message count of each
      other in a 2**96 space.
    Every server of a cluster must run this format: an older server (Fernet) refuses these
    messages and disconnects, as it would a wrong password.
    """

    VERSION = b"\x01"
    _MASK = (1 << 96) - 1

    def __init__(self, password: str | bytes) -> None:
        if not isinstance(password, bytes):
            password = password.encode()
        seed = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_pysyncobj_encryptor.SALT,
                          iterations=100_000).derive(password)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"peerplane raft wire v2").derive(seed)
        self._aead = AESGCM(key)
        self._start = int.from_bytes(os.urandom(12), "big")
        self._count = itertools.count()  # next() is atomic: safe from any thread
        self._last: tuple[Any, bytes] = (None, b"")

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        nonce = ((self._start + next(self._count)) & self._MASK).to_bytes(12, "big")
        return b"".join((self.VERSION, nonce, self._aead.encrypt(
            nonce, current_time.to_bytes(8, "big", signed=True) + data, self.VERSION)))

    def _open(self, token: bytes) -> bytes:
        if token[:1] != self.VERSION or len(token) < 1 + 12 + 8 + 16:
            raise InvalidToken("not a peerplane raft message")
        return self._aead.decrypt(token[1:13], token[13:], self.VERSION)  # InvalidTag if forged

    def extract_timestamp(self, token: bytes) -> int:
        plain = self._open(token)
        self._last = (token, plain)
        return int.from_bytes(plain[:8], "big", signed=True)

    def decrypt(self, token: bytes, ttl: int | None = None) -> bytes:
        last = self._last  # one read: another thread's token never matches this one
        plain = last[1] if last[0] is token else self._open(token)
        return plain[8:]


_pysyncobj.getEncryptor = RaftCipher  # servers' connections
_pysyncobj_utility.getEncryptor = RaftCipher  # membership's status/add messages (TcpUtility)
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
