"""Appends/s of the Raft journal: PySyncObj's FileJournal (mmap) vs peerplane's (write() + CRC),
without sync and with one fdatasync per batch of 32 entries (group commit's shape).

    .venv/bin/python bench/journal.py [--entries 20000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysyncobj.journal import FileJournal  # noqa: E402

from cluster.journal import ChecksummedJournal  # noqa: E402

COMMAND = b"\x01" + os.urandom(300)  # about one peering-token command


def appends_per_second(journal, entries: int, sync_every: int) -> float:
    started = time.perf_counter()
    for i in range(1, entries + 1):
        journal.add(COMMAND, i, 1)
        if sync_every and i % sync_every == 0:
            journal.flush() if isinstance(journal, FileJournal) else journal.sync()
    return entries / (time.perf_counter() - started)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--dir", default=None, help="where the journal files go (default: $TMPDIR)")
    args = ap.parse_args()
    print(f"{'journal':<28} {'no sync':>12} {'sync / 32':>12}  (appends/s, {args.entries})")
    for name, make in (("PySyncObj FileJournal (mmap)", FileJournal),
                       ("peerplane ChecksummedJournal", ChecksummedJournal)):
        rates = []
        for sync_every in (0, 32):
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                j = make(os.path.join(tmp, "raft.journal"))
                rates.append(appends_per_second(j, args.entries, sync_every))
                j._destroy()
        print(f"{name:<28} {rates[0]:>12,.0f} {rates[1]:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
