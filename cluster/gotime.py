"""Times as Go writes them in JSON: RFC3339 with nanosecond precision (`time.RFC3339Nano`) in
UTC - trailing zeros of the fraction dropped, no fraction at all for a whole second."""

from __future__ import annotations

import datetime


def rfc3339(moment: datetime.datetime | float) -> str:
    """A UTC datetime, or seconds since the epoch, in Go's RFC3339Nano."""
    if not isinstance(moment, datetime.datetime):
        moment = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def now() -> str:
    """UTC now in Go's RFC3339Nano."""
    return rfc3339(datetime.datetime.now(datetime.UTC))
