"""The leader lease's bookkeeping: which append_entries each follower acknowledged, by send time.

Fed by cluster/raft_wall/ (send times from the transport, responses from the receive
handler); read by cluster/raft.py (default reads' lease, ReadIndex rounds).
"""

from __future__ import annotations

from collections import deque
from typing import Any


class LeaseTracker:
    """When did a majority last acknowledge something this leader *sent*?

    PySyncObj stamps responses with the time they are processed, which is unsafe for a lease:
    a leader that was paused (SIGSTOP, GC, swap) processes old acks on waking and would think
    it was just confirmed. Here every append_entries send time is queued per follower and each
    response pops the oldest one (TCP keeps order; each append_entries gets one response), so an
    ack proves the follower accepted this leader *at or after the popped send time*. Lost
    messages can only make the popped time older, i.e. the lease shorter, never longer.
    Written by the tick thread, read by the event loop (single dict operations, GIL-atomic).
    """

    def __init__(self) -> None:
        self._sent: dict[Any, deque[float]] = {}
        self.acked: dict[Any, float] = {}

    def on_sent(self, node: Any, at: float) -> None:
        self._sent.setdefault(node, deque(maxlen=100_000)).append(at)

    def on_response(self, node: Any) -> None:
        queue = self._sent.get(node)
        if queue:
            self.acked[node] = queue.popleft()

    def reset(self, node: Any) -> None:
        """A connection (re)started: whatever was in flight on the old one is lost."""
        self._sent.pop(node, None)

    def majority_since(self, others: Any, since: float) -> bool:
        fresh = 1 + sum(1 for n in others if self.acked.get(n, 0.0) > since)
        return fresh > (len(others) + 1) / 2
