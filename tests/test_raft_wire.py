"""Issue 15: the cheaper per-message codec swapped into PySyncObj's TcpConnection
(cluster/raft_wall/hooks.py) reads and writes what PySyncObj's own codec does."""

from __future__ import annotations

import os
import zlib

import pytest
from cryptography.fernet import InvalidToken
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj import syncobj, tcp_connection
from pysyncobj.encryptor import getEncryptor

from cluster.raft_wall.hooks import StoredZlib, VerifyOnceFernet, WirePickle

MESSAGE = (os.urandom(32), {"type": "append_entries", "term": 3, "commit_index": 41,
                            "entries": [(b"\x00\x80\x02" + bytes(range(256)), 42, 3)],
                            "prevLogIdx": 41, "prevLogTerm": 3})


def test_tcp_connection_and_the_log_use_the_wall_codec():
    assert tcp_connection.zlib is StoredZlib
    assert tcp_connection.pickle is WirePickle
    assert syncobj.pickle is WirePickle


@pytest.mark.parametrize("size", [0, 1, 300, 16 * 1024, 16 * 1024 + 1, 200_000])
def test_what_the_codec_writes_zlib_reads_and_the_other_way_round(size):
    data = os.urandom(size // 2) + b"a" * (size - size // 2)
    assert zlib.decompress(StoredZlib.compress(data, 3)) == data
    assert StoredZlib.decompress(zlib.compress(data, 3)) == data
    assert StoredZlib.decompress(zlib.compress(data, 0)) == data


def test_a_stored_frame_with_a_wrong_checksum_is_refused():
    frame = bytearray(StoredZlib.compress(b"hello", 3))
    frame[-1] ^= 1
    with pytest.raises(zlib.error):
        StoredZlib.decompress(bytes(frame))


def test_pysyncobjs_own_pickle_reads_the_wire_pickle():
    assert pysyncobj_pickle.loads(WirePickle.dumps(MESSAGE)) == MESSAGE
    assert WirePickle.loads(pysyncobj_pickle.dumps(MESSAGE)) == MESSAGE


def test_tokens_are_fernets_both_ways():
    fernet = getEncryptor("secret")
    ours = VerifyOnceFernet(fernet)
    token = ours.encrypt_at_time(b"payload", 1234)
    assert fernet.extract_timestamp(token) == 1234 and fernet.decrypt(token) == b"payload"
    theirs = fernet.encrypt_at_time(b"other", 99)
    assert ours.extract_timestamp(theirs) == 99
    assert ours.decrypt(theirs) == b"other"
    assert ours.decrypt(token) == b"payload"  # not the token just verified: decrypted afresh


def test_a_tampered_token_or_another_password_is_refused():
    ours = VerifyOnceFernet(getEncryptor("secret"))
    token = bytearray(ours.encrypt_at_time(b"payload", 1234))
    token[20] = ord("A") if token[20] != ord("A") else ord("B")
    with pytest.raises(InvalidToken):
        ours.extract_timestamp(bytes(token))
    other = getEncryptor("another").encrypt_at_time(b"payload", 1234)
    with pytest.raises(InvalidToken):
        ours.extract_timestamp(other)
    with pytest.raises(InvalidToken):
        ours.decrypt(other)
