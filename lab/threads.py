"""Background threads of the lab's clients and monitors: started together, stopped together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Background:
    """Daemon threads that run until `stop()`; they watch `self._stop` between steps."""

    def __init__(self, join_timeout: float) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._join_timeout = join_timeout

    def spawn(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=name)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self._join_timeout)
