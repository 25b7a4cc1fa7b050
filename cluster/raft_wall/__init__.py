"""The one place peerplane reaches into PySyncObj's internals.

PySyncObj (pinned to PYSYNCOBJ_VERSION) lacks things a leader lease, fsync durability and group
commit need, so this package overrides some of its name-mangled methods and reads some private
attributes. Nothing else in peerplane may do either. `check_internals` runs before a node starts
and raises `PySyncObjIncompatible`, naming every missing internal and the pinned version, if an
upgrade renamed or removed one: an upgrade must fail loudly, never quietly drop an fsync.

- internals.py: the pinned version, every internal used, and the start-up check;
- hooks.py: what is swapped into PySyncObj (our journal, a transport that stamps send times for
  the lease, the batched wake-up pipe);
- syncobj.py: `PeerplaneSyncObj`, the overridden methods (lease, vote stickiness, PreVote,
  ReadIndex rounds, read-index messages for follower reads, membership, fsync, group commit,
  a follower's commands sent to the leader,
  sitting out on a disk fault).
"""

from .internals import (
    PYSYNCOBJ_VERSION,
    PySyncObjIncompatible,
    check_internals,
    missing_internals,
)
from .syncobj import KEEPALIVE, PeerplaneSyncObj

__all__ = ["KEEPALIVE", "PYSYNCOBJ_VERSION", "PeerplaneSyncObj", "PySyncObjIncompatible",
           "check_internals", "missing_internals"]
