"""Blocking-query support: wake waiters when the FSM index moves."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


class IndexWatch:
    """Wakes blocking queries when the FSM's index moves. Fed from the tick thread through
    `loop.call_soon_threadsafe(watch.notify, index)`; waiters sleep on an event, never poll."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self, index: int) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_past(self, current: Callable[[], int], index: int, wait: float) -> None:
        """Return once current() > index, or when wait (plus Consul's jitter of wait/16) ends.
        Index 0 never blocks: a Consul watch starts with it to get the current state."""
        if index == 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait + random.uniform(0, wait / 16)
        while current() <= index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                return
