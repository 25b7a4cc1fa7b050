"""api/openapi.yaml: a valid OpenAPI 3.1 document that describes every route the app serves
(the live document and the fuzz run are in test_fuzz.py)."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from api.app import make_app
from api.context import ServerContext
from api.limits import HTTPLimits
from api.openapi import load_spec, route_key, served_operations, served_spec

_METHODS = ("get", "put", "post", "delete", "patch")


def _app():
    ctx = ServerContext(node=None, fsm=None, node_name="n1", datacenter="dc1",
                        raft_addr="127.0.0.1:8300", http_addr="127.0.0.1:8500",
                        peering_addr="127.0.0.1:8503")
    return make_app(ctx)


def _described() -> set[tuple[str, str]]:
    return {(route_key(path), method) for path, item in load_spec()["paths"].items()
            for method in item if method in _METHODS}


def test_the_document_is_valid_openapi():
    validate(load_spec())


def test_every_served_route_is_described():
    missing = served_operations(_app()) - _described()
    assert not missing, f"routes missing from api/openapi.yaml: {sorted(missing)}"


def test_the_served_document_keeps_only_what_the_app_serves():
    app = _app()
    doc = served_spec(app)
    validate(doc)
    served = {(route_key(path), method) for path, item in doc["paths"].items()
              for method in item if method in _METHODS}
    assert served == served_operations(app)


def test_every_operation_documents_its_refusals_as_plain_text():
    for path, item in load_spec()["paths"].items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            assert "405" in op["responses"], (method, path)
            for status, response in op["responses"].items():
                if "$ref" in response:
                    continue
                if status.startswith("4") and "content" in response:
                    kinds = set(response["content"])
                    assert kinds == {"text/plain"} or (path, status) == (
                        "/v1/operator/autopilot/health", "429"), (method, path, status)


def test_line_and_field_limits_must_differ():
    with pytest.raises(ValueError):
        HTTPLimits(max_line_size=8192, max_field_size=8192)
