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


_GO_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's %q / strconv.Quote: what Consul puts in messages like `Peering not found for "x"`."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_SHORT:
            out.append(_GO_SHORT[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate: not a valid rune
            out.append("\\ufffd")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
