"""What the wall swaps into PySyncObj: our journal, a transport that stamps send times for the
lease, and the wake-up pipe batched per event-loop pass."""

from __future__ import annotations

import time
from typing import Any

import pysyncobj.syncobj as _pysyncobj
from pysyncobj.transport import TCPTransport

from ..journal import ChecksummedJournal, JournalPath
from ..lease import LeaseTracker


def timed_transport(lease: LeaseTracker) -> Any:
    class _TimedTransport(TCPTransport):
        def send(self, node: Any, message: Any) -> bool:
            at = time.monotonic()
            ok = super().send(node, message)
            if ok and isinstance(message, dict) and message.get("type") == "append_entries":
                lease.on_sent(node, at)
            return ok

    return _TimedTransport


_create_journal = _pysyncobj.createJournal


def _journal_for(journal_file: Any) -> Any:
    """PySyncObj builds its journal itself (`createJournal(conf.journalFile)`); a JournalPath
    gets ours: write() + fdatasync instead of an mmap, CRC per entry (cluster/journal.py)."""
    if isinstance(journal_file, JournalPath):
        return ChecksummedJournal(journal_file)
    return _create_journal(journal_file)


_pysyncobj.createJournal = _journal_for


class HeldWakeups:
    """PySyncObj's wake-up pipe (written for every queued command), written once per batch
    while the event loop holds it: commands submitted in one loop pass wake the tick thread
    once and are drained - sent and synced - together, instead of a GIL hand-off each."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.held = False
        self.pending = False
        self.written = 0  # wake-ups written to the pipe

    def notify(self) -> None:
        if self.held:
            self.pending = True
            return
        self.written += 1
        try:
            self.pipe.notify()
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def release(self) -> None:
        self.held = False
        if self.pending:
            self.pending = False
            self.notify()
