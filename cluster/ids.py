"""Random (version 4) UUIDs as text: `str(uuid.uuid4())` for a fraction of its cost.

`uuid.uuid4()` builds a UUID object from os.urandom(16) and formats it through an int; the
request path makes one per request (the request ID) and a write makes up to three more (IDs,
secrets). Same source of randomness (os.urandom), same 122 random bits, same text."""

from __future__ import annotations

import itertools
import os

_BATCH = 64  # UUIDs made per read of os.urandom
_ready: list[str] = []


def _uuid_text(raw: bytearray) -> str:
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_uuid() -> str:
    """A random UUID, from a batch made with one os.urandom read: os.urandom lets go of the GIL
    around its getrandom call, and under load the event loop then waited for PySyncObj's tick
    thread to hand it back - 4 % of the leader's loop time in py-spy, three times a write."""
    while True:
        try:
            return _ready.pop()  # atomic: safe from any thread
        except IndexError:
            raw = os.urandom(16 * _BATCH)
            _ready.extend(_uuid_text(bytearray(raw[i:i + 16])) for i in range(0, len(raw), 16))


# A forked child (the snapshot writer) must not hand out its parent's UUIDs.
os.register_at_fork(after_in_child=_ready.clear)


_PREFIX = new_uuid()[:24]  # 96 random bits per process: "xxxxxxxx-xxxx-4xxx-yxxx-"
_SERIAL = itertools.count(1)  # next() is atomic: safe from any thread


def request_uuid() -> str:
    """A request ID in UUID text, unique but not secret: this process's random prefix and a
    counter (no read of os.urandom per request). Never use it for IDs or secrets."""
    return f"{_PREFIX}{next(_SERIAL) & 0xFFFFFFFFFFFF:012x}"
