"""Issue 15: the cheaper per-message codec swapped into PySyncObj's TcpConnection
(cluster/raft_wall/hooks.py) reads and writes what PySyncObj's own codec does."""

from __future__ import annotations

import os
import zlib

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.fernet import InvalidToken
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj import syncobj, tcp_connection, utility
from pysyncobj.encryptor import getEncryptor
from pysyncobj.tcp_connection import CONNECTION_STATE

from cluster.lease import LeaseTracker
from cluster.raft_wall.hooks import RaftCipher, StoredZlib, WirePickle, timed_transport

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


def test_servers_and_the_membership_utility_encrypt_with_the_raft_cipher():
    assert syncobj.getEncryptor is RaftCipher
    assert utility.getEncryptor is RaftCipher


def test_a_message_reads_back_with_its_timestamp_on_another_server_with_the_password():
    sender, receiver = RaftCipher("secret"), RaftCipher("secret")
    token = sender.encrypt_at_time(b"payload", 1234)
    assert receiver.extract_timestamp(token) == 1234
    assert receiver.decrypt(token) == b"payload"


def test_a_token_not_just_authenticated_is_decrypted_afresh():
    cipher = RaftCipher("secret")
    first, second = (cipher.encrypt_at_time(b"one", 1), cipher.encrypt_at_time(b"two", 2))
    assert cipher.extract_timestamp(first) == 1
    assert cipher.decrypt(second) == b"two"
    assert cipher.decrypt(first) == b"one"


def test_no_two_messages_share_a_nonce():
    a, b = RaftCipher("secret"), RaftCipher("secret")
    nonces = [c.encrypt_at_time(b"x", 0)[1:13] for c in (a, b) for _ in range(1000)]
    assert len(set(nonces)) == 2000


def test_the_plaintext_does_not_appear_on_the_wire():
    token = RaftCipher("secret").encrypt_at_time(b"append_entries-payload", 7)
    assert b"append_entries" not in token


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_a_tampered_token_is_refused(position):
    cipher = RaftCipher("secret")
    token = bytearray(cipher.encrypt_at_time(b"payload", 1234))
    token[position] ^= 1
    with pytest.raises((InvalidToken, InvalidTag)):
        cipher.extract_timestamp(bytes(token))


def test_another_password_or_a_fernet_token_is_refused():
    ours = RaftCipher("secret")
    with pytest.raises(InvalidTag):
        ours.extract_timestamp(RaftCipher("another").encrypt_at_time(b"payload", 1234))
    with pytest.raises(InvalidToken):
        ours.extract_timestamp(getEncryptor("secret").encrypt_at_time(b"payload", 1234))
    with pytest.raises(InvalidToken):
        ours.decrypt(b"\x01short")


class _Connection:
    """What the transport's send looks at of a TcpConnection, and what it was given."""

    def __init__(self, key: bytes | None) -> None:
        self.encryptor, self.sendRandKey = RaftCipher("secret"), key
        self.state, self.sent = CONNECTION_STATE.CONNECTED, []

    def send(self, message) -> None:
        self.sent.append(message)


def _transport_with(conn: _Connection):
    transport = object.__new__(timed_transport(LeaseTracker()))
    transport._connections, transport._send_random_sleep_duration = {"n2": conn}, 0
    return transport


def test_nothing_is_sent_on_a_connection_whose_key_exchange_is_not_done():
    conn = _Connection(key=None)
    assert _transport_with(conn).send("n2", {"type": "keepalive"}) is False
    assert conn.sent == []


def test_a_connection_that_exchanged_keys_sends():
    conn = _Connection(key=b"k" * 32)
    assert _transport_with(conn).send("n2", {"type": "keepalive"}) is True
    assert conn.sent == [{"type": "keepalive"}]
