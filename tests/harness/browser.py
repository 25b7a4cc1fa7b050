"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for dashboard tests.

One browser process per `Browser`, its own throw-away profile, `--remote-debugging-port=0`
(Chromium prints the port it chose). Pages are driven with `Runtime.evaluate` over a WebSocket
(aiohttp's client), so a test can load the dashboard, change the cluster, and watch the page
update in real time - no WebDriver, nothing from a registry but the Debian package.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

import aiohttp

_DEVTOOLS = re.compile(r"DevTools listening on (ws://\S+)")


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium is required: apt-get install chromium")


def chromium_argv(*extra: str, profile: str) -> list[str]:
    return [
        chromium_path(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--mute-audio",
        f"--user-data-dir={profile}", *extra,
    ]


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description")))
                                             for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.exceptions.append(
                    details.get("exception", {}).get("description") or details.get("text", ""))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("DevTools connection closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float = 30.0) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method,
                                            "params": params or {}}))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        res = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
        })
        if "exceptionDetails" in res:
            raise RuntimeError(f"page error: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})

    async def wait_for(self, expression: str, timeout: float = 20.0,
                       interval: float = 0.1) -> Any:
        """Poll a JS expression until it is truthy; its value. Errors count as not yet (the
        page may still be loading, an element not drawn yet)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.evaluate(expression)
            except RuntimeError as e:
                last = e
            else:
                if last:
                    return last
            await asyncio.sleep(interval)
        try:
            text = await self.evaluate("document.body ? document.body.innerText : ''")
        except (RuntimeError, ConnectionError, TimeoutError) as e:
            text = f"(page text unavailable: {e})"
        raise AssertionError(f"not true within {timeout}s: {expression} (last {last!r}); "
                             f"page exceptions: {self.exceptions}; page text:\n{text}")

    async def screenshot(self, path: str) -> None:
        res = await self.send("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(res["data"]))

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()


class Browser:
    """`async with Browser() as b: page = await b.new_page(url)`."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.size = (width, height)
        self.proc: subprocess.Popen[str] | None = None
        self._profile = ""
        self._session: aiohttp.ClientSession | None = None
        self.http = ""

    async def __aenter__(self) -> Browser:
        self._profile = tempfile.mkdtemp(prefix="pp-chromium-")
        argv = chromium_argv("--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                             f"--window-size={self.size[0]},{self.size[1]}", "about:blank",
                             profile=self._profile)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        try:
            ws_url = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, self._devtools_url), 60)
        except BaseException:
            await self.__aexit__()
            raise
        self.http = "http://" + ws_url.split("/")[2]
        self._session = aiohttp.ClientSession()
        return self

    def _devtools_url(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        stderr = self.proc.stderr
        seen = []
        for line in stderr:
            seen.append(line)
            if m := _DEVTOOLS.search(line):
                # Keep draining stderr so Chromium never blocks on a full pipe.
                threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
                return m.group(1)
        raise RuntimeError("chromium did not start its DevTools endpoint:\n" + "".join(seen))

    async def new_page(self, url: str = "about:blank") -> Page:
        assert self._session is not None
        async with self._session.put(f"{self.http}/json/new?{url}") as resp:
            target = await resp.json(content_type=None)
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        return page

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)
