"""Issue 17: aiohttp's internals are used in one module, and a missing one stops start-up."""

from __future__ import annotations

import pathlib
import re

import pytest
from aiohttp import web

from api import aiohttp_wall

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRIVATE = re.compile(r"aiohttp\.web_protocol|RequestHandler|_make_server|__class__ =")


def test_the_installed_aiohttp_has_every_internal_the_wall_uses():
    assert aiohttp_wall.missing_internals() == []


async def test_a_server_lacking_a_private_field_is_named_with_the_pinned_version():
    server = web.Server(lambda request: None)
    del server._kwargs  # as if an upgrade renamed it

    with pytest.raises(aiohttp_wall.AiohttpIncompatible) as err:
        aiohttp_wall.check(server)
    assert "web.Server._kwargs" in str(err.value)
    assert aiohttp_wall.PINNED in str(err.value)


def test_a_changed_handle_error_signature_is_named(monkeypatch):
    def handle_error(self, request, status=500, exc=None):  # as if `message` were dropped
        raise AssertionError

    monkeypatch.setattr(aiohttp_wall.RequestHandler, "handle_error", handle_error)
    with pytest.raises(aiohttp_wall.AiohttpIncompatible, match=r"RequestHandler\.handle_error"):
        aiohttp_wall.check()


def test_no_other_product_module_touches_aiohttp_internals():
    users = sorted(
        str(path.relative_to(ROOT))
        for package in ("api", "peerplane_cli", "cluster", "lab")
        for path in (ROOT / package).rglob("*.py")
        if PRIVATE.search(path.read_text()) and path.name != "aiohttp_wall.py"
    )
    assert users == []
