"""Errors as Consul sends them: plain-text bodies with Consul's message texts."""

from __future__ import annotations

from aiohttp import web


class APIError(Exception):
    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.Response(
            status=self.status, text=self.text, content_type="text/plain", headers=self.headers
        )


def bad_request(text: str) -> APIError:
    return APIError(400, text)


def no_leader() -> APIError:
    return APIError(503, "No cluster leader")


def disk_unavailable(why: str) -> APIError:
    return APIError(
        503, f"Server unavailable: its Raft journal cannot be written ({why}); it takes no part "
        "in the cluster until the disk is writable again - use another server"
    )
