"""Every PySyncObj internal the wall uses, and the start-up check that they all exist."""

from __future__ import annotations

import logging

import pysyncobj.serializer as _serializer
import pysyncobj.syncobj as _pysyncobj
import pysyncobj.tcp_connection as _tcp_connection
import pysyncobj.utility as _pysyncobj_utility
from pysyncobj import SyncObj
from pysyncobj.fast_queue import FastQueue
from pysyncobj.transport import TCPTransport
from pysyncobj.version import VERSION

log = logging.getLogger("peerplane.raft")

PYSYNCOBJ_VERSION = "0.3.17"

# Methods of SyncObj the wall overrides or calls (they must exist on the class).
_METHODS = (
    "_SyncObj__sendNextNodeIdx",
    "_SyncObj__sendAppendEntries",
    "_SyncObj__onMessageReceived",
    "_SyncObj__onNodeConnected",
    "_SyncObj__onNodeDisconnected",
    "_checkCommandsToApply",
    "_onTick",
    "_SyncObj__setState",
    "_SyncObj__onLeaderChanged",
    "_SyncObj__generateRaftTimeout",
    "_SyncObj__doChangeCluster",
    "_SyncObj__updateClusterConfiguration",
    "_SyncObj__tryLogCompaction",
    "_SyncObj__applyLogEntries",
)
# Private fields, found as the names a constructor assigns (mangled at compile time).
_FIELDS: tuple[tuple[type, str], ...] = (
    (SyncObj, "_SyncObj__raftLog"),
    (SyncObj, "_SyncObj__noopIDx"),
    (SyncObj, "_SyncObj__raftState"),
    (SyncObj, "_SyncObj__raftLeader"),
    (SyncObj, "_SyncObj__raftElectionDeadline"),
    (SyncObj, "_SyncObj__transport"),
    (SyncObj, "_SyncObj__transferInProgress"),
    (SyncObj, "_SyncObj__pipeNotifier"),
    (SyncObj, "_SyncObj__raftNextIndex"),
    (SyncObj, "_SyncObj__commandsQueue"),
    (SyncObj, "_SyncObj__commandsLocalCounter"),
    (SyncObj, "_SyncObj__commandsWaitingReply"),
    (SyncObj, "_SyncObj__conf"),
    (SyncObj, "_SyncObj__lastSerializedTime"),
    (SyncObj, "_SyncObj__serializer"),
    (_serializer.Serializer, "_Serializer__pid"),
    (TCPTransport, "_connections"),
    (FastQueue, "_FastQueue__queue"),
    (_tcp_connection.TcpConnection, "encryptor"),
    (_tcp_connection.TcpConnection, "sendRandKey"),
    (_tcp_connection.TcpConnection, "_TcpConnection__lastReadTime"),  # set by connect() too
)
# Message types and fields the overrides look at, as PySyncObj's receive handler spells them.
_MESSAGE_WORDS = ("append_entries", "next_node_idx", "request_vote", "last_log_term", "term",
                  "success", "reset", "apply_command", "apply_command_response", "request_id",
                  "command", "error", "log_idx", "log_term")


class PySyncObjIncompatible(RuntimeError):
    """The installed PySyncObj lacks an internal peerplane depends on."""


def _assigned_names(cls: type) -> set[str]:
    init = cls.__dict__.get("__init__")
    return set(getattr(getattr(init, "__code__", None), "co_names", ()))


def missing_internals(
    sync_cls: type = SyncObj, fields: tuple[tuple[type, str], ...] = _FIELDS,
) -> list[str]:
    """Every internal the wall needs that `sync_cls` (and PySyncObj's journal) lacks."""
    missing = [f"SyncObj.{m}" for m in _METHODS if not callable(getattr(sync_cls, m, None))]
    missing += [f"{cls.__name__}.{name}" for cls, name in fields
                if name not in _assigned_names(cls)]
    receive = getattr(sync_cls, "_SyncObj__onMessageReceived", None)
    words = set(getattr(getattr(receive, "__code__", None), "co_consts", ()))
    missing += [f"message word {w!r}" for w in _MESSAGE_WORDS if receive and w not in words]
    if "createJournal" not in vars(_pysyncobj):
        missing.append("pysyncobj.syncobj.createJournal")
    missing += _codec_missing()
    return missing


def _codec_missing() -> list[str]:
    """What hooks.py's codec swaps in: `getEncryptor` and `pickle` as SyncObj uses them,
    `getEncryptor` as TcpUtility (membership) uses it, and
    the `pickle`, `zlib` and encryptor calls of TcpConnection's send and receive."""
    missing = [f"pysyncobj.syncobj.{name}" for name in ("getEncryptor", "pickle")
               if name not in vars(_pysyncobj)]
    missing += [f"pysyncobj.tcp_connection.{name}" for name in ("zlib", "pickle")
                if name not in vars(_tcp_connection)]
    if "getEncryptor" not in vars(_pysyncobj_utility):
        missing.append("pysyncobj.utility.getEncryptor")
    missing += [f"pysyncobj.serializer.{name}" for name in ("atomicReplace", "gzip")
                if name not in vars(_serializer)]
    conn = _tcp_connection.TcpConnection
    for method, names in (("send", ("compress", "encrypt_at_time")),
                          ("_TcpConnection__processParseMessage",
                           ("decompress", "extract_timestamp", "decrypt"))):
        code = getattr(getattr(conn, method, None), "__code__", None)
        if code is None or not set(names) <= set(code.co_names):
            missing.append(f"TcpConnection.{method} calling {', '.join(names)}")
    return missing


def check_internals(sync_cls: type = SyncObj,
                    fields: tuple[tuple[type, str], ...] = _FIELDS) -> None:
    """Raise, naming what is missing and the version this wall was written against."""
    missing = missing_internals(sync_cls, fields)
    if missing:
        raise PySyncObjIncompatible(
            f"pysyncobj {VERSION} lacks internals peerplane overrides or reads: "
            f"{', '.join(missing)}; cluster/raft_wall/ is written against pysyncobj "
            f"{PYSYNCOBJ_VERSION} (the version pinned in pyproject.toml)"
        )
    if VERSION != PYSYNCOBJ_VERSION:
        log.warning("pysyncobj %s installed, cluster/raft_wall/ is written against %s: "
                    "its internals are present, but re-run the chaos suite", VERSION,
                    PYSYNCOBJ_VERSION)
