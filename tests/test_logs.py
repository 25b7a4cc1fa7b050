"""The agent's log formats (cluster/logs.py), in-process: text and JSON lines, request IDs,
redaction. The same formats from real agents are checked in test_metrics.py."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from cluster import logs


@pytest.fixture
def capture():
    stream = io.StringIO()

    def configure(fmt: str) -> logging.Logger:
        logs.setup("DEBUG", fmt, "node-a")
        handler = logging.getLogger().handlers[0]
        handler.setStream(stream)
        return logging.getLogger("peerplane.test")

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield configure, stream
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logs._format = "text"


def test_json_lines_carry_node_request_id_and_fields(capture):
    configure, stream = capture
    log = configure("json")
    token = logs.REQUEST_ID.set("rid-1")
    try:
        log.info("hello %s", "world", extra={"status": 200})
    finally:
        logs.REQUEST_ID.reset(token)
    log.warning("outside a request")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["@level"] == "info" and first["@module"] == "peerplane.test"
    assert first["@message"] == "hello world"
    assert first["node"] == "node-a" and first["request_id"] == "rid-1"
    assert first["status"] == 200
    assert first["@timestamp"].endswith("Z")
    assert "request_id" not in second
    assert third["@level"] == "error" and "ValueError: boom" in third["exception"]


def test_text_lines_are_readable(capture):
    configure, stream = capture
    log = configure("text")
    token = logs.REQUEST_ID.set("rid-2")
    try:
        log.info("Request finished", extra={"status": 404})
    finally:
        logs.REQUEST_ID.reset(token)
    (line,) = stream.getvalue().splitlines()
    assert " node-a peerplane.test INFO Request finished status=404 request_id=rid-2" in line


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        logs.setup("INFO", "xml", "n")


@pytest.mark.parametrize("given, hidden", [
    ("/v1/peerings", "/v1/peerings"),
    ("/v1/peerings?stale", "/v1/peerings?stale"),
    ("/v1/peerings?token=abc", "/v1/peerings?token=<hidden>"),
    ("/v1/peerings?stale&token=abc&index=3", "/v1/peerings?stale&token=<hidden>&index=3"),
    ("/v1/peerings?TOKEN=abc", "/v1/peerings?TOKEN=<hidden>"),
    ("/v1/peering/tokenish?x=token", "/v1/peering/tokenish?x=token"),
])
def test_redact_url(given, hidden):
    assert logs.redact_url(given) == hidden


def test_request_id_is_kept_when_sane():
    assert logs.request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "has space", "x" * 129, "new\nline", "é"):
        uuid.UUID(logs.request_id(bad))
