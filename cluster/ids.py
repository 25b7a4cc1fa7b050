"""Random (version 4) UUIDs as text: `str(uuid.uuid4())` for a fraction of its cost.

`uuid.uuid4()` builds a UUID object from os.urandom(16) and formats it through an int; the
request path makes one per request (the request ID) and a write makes up to three more (IDs,
secrets). Same source of randomness (os.urandom), same 122 random bits, same text."""

from __future__ import annotations

import itertools
import os


def new_uuid() -> str:
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_PREFIX = new_uuid()[:24]  # 96 random bits per process: "xxxxxxxx-xxxx-4xxx-yxxx-"
_SERIAL = itertools.count(1)  # next() is atomic: safe from any thread


def request_uuid() -> str:
    """A request ID in UUID text, unique but not secret: this process's random prefix and a
    counter (no read of os.urandom per request). Never use it for IDs or secrets."""
    return f"{_PREFIX}{next(_SERIAL) & 0xFFFFFFFFFFFF:012x}"
