"""Agent logging: readable text by default, one JSON object a line with `--log-format json`.

The JSON keys follow Consul's (hclog): `@timestamp`, `@level`, `@module`, `@message`, then the
record's fields (`node`, `request_id`, and whatever a caller passed in `extra=`). The request ID
of the HTTP request being served rides in a context variable, so every line logged while serving
it carries the ID. Nothing secret is logged: tokens travel in headers and bodies, which are never
logged, and a `token` query parameter is replaced by `<hidden>` as Consul does.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import sys
from typing import Any

from .ids import request_uuid

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "peerplane_request_id", default=None
)
_VALID_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "node", "request_id", "taskName",
}


def request_id(incoming: str | None) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one (UUID text)."""
    if incoming and _VALID_ID.fullmatch(incoming):
        return incoming
    return request_uuid()


def redact_url(path_qs: str) -> str:
    """A request's path and query as it may be logged: `token=` values become `<hidden>`."""
    path, sep, query = path_qs.partition("?")
    if not sep or "token" not in query.lower():
        return path_qs
    parts = []
    for part in query.split("&"):
        key, eq, _value = part.partition("=")
        parts.append(f"{key}=<hidden>" if eq and key.lower() == "token" else part)
    return f"{path}?{'&'.join(parts)}"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}


class _Context(logging.Filter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "@timestamp": ts.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "@level": record.levelname.lower(),
            "@module": record.name,
            "@message": record.getMessage(),
            "node": getattr(record, "node", None),
        }
        if getattr(record, "request_id", None):
            out["request_id"] = record.request_id
        for k, v in _fields(record).items():
            out.setdefault(k, v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(node)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={v}" for k, v in _fields(record).items()]
        if getattr(record, "request_id", None):
            extra.append(f"request_id={record.request_id}")
        if not extra:
            return line
        head, nl, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {' '.join(extra)}{nl}{tail}"


def setup(level: str = "INFO", fmt: str = "text", node: str = "-") -> None:
    """Configure the root logger once for an agent process (Python's logging is per process;
    the agent's `announce` line gets the format from the agent's config)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(node))
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())


def announce(message: str, fmt: str = "text", **fields: Any) -> None:
    """A line for stdout whatever the log level (the agent's `ready` line): plain text, or
    with `fmt` "json" a JSON object whose @message is that text."""
    if fmt == "json":
        ts = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
        line = json.dumps({"@timestamp": ts.replace("+00:00", "Z"), "@level": "info",
                           "@module": "peerplane.agent", "@message": message, **fields})
    else:
        line = message
    print(line, flush=True)
