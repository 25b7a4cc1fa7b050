"""Issue 17: PySyncObj's internals are used in one module, and a missing one stops start-up."""

from __future__ import annotations

import pathlib
import re

import pytest
from pysyncobj import SyncObj

from cluster import raft_wall
from cluster.fsm import FSM
from cluster.raft import RaftNode
from cluster.raft_wall import internals

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRIVATE = re.compile(r"_SyncObj__|_TcpConnection__|_FastQueue__|_FileJournal__|_ResizableFile__"
                     r"|_MetaStorer__")


def test_the_installed_pysyncobj_has_every_internal_the_wall_uses():
    assert raft_wall.missing_internals() == []


def test_a_syncobj_class_lacking_an_overridden_method_is_named_with_the_pinned_version():
    class Lacking(SyncObj):
        _SyncObj__sendAppendEntries = None  # as if an upgrade renamed it

    with pytest.raises(raft_wall.PySyncObjIncompatible) as err:
        raft_wall.check_internals(Lacking)
    assert "SyncObj._SyncObj__sendAppendEntries" in str(err.value)
    assert "0.3.17" in str(err.value)


def test_a_journal_class_no_longer_assigning_a_private_field_is_named():
    class Journal:
        def __init__(self) -> None:
            self.handle = None  # renamed: the wall's fsync would find nothing to sync

    with pytest.raises(raft_wall.PySyncObjIncompatible, match=r"Journal\._FileJournal__journal"):
        raft_wall.check_internals(fields=((Journal, "_FileJournal__journalFile"),))


def test_a_node_refuses_to_start_when_syncobj_lacks_an_internal(monkeypatch, tmp_path):
    monkeypatch.delattr(SyncObj, "_SyncObj__onNodeConnected")
    with pytest.raises(raft_wall.PySyncObjIncompatible, match="_SyncObj__onNodeConnected"):
        RaftNode(self_addr="127.0.0.1:1", peers=[], bind_addr="127.0.0.1:0",
                 data_dir=str(tmp_path), password="secret", fsm=FSM())


def test_no_module_outside_the_wall_touches_pysyncobj_internals():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("cluster", "api", "peerplane_cli", "lab", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if "raft_wall" not in path.parts and PRIVATE.search(path.read_text())
    ]
    assert offenders == []


def test_every_private_name_the_wall_uses_is_checked_at_start_up():
    source = "".join(p.read_text() for p in (ROOT / "cluster" / "raft_wall").glob("*.py"))
    used = set(re.findall(r"_(?:SyncObj|TcpConnection|FastQueue|Serializer)__\w+", source))
    checked = set(internals._METHODS) | {name for _, name in internals._FIELDS}
    checked.add("_TcpConnection__processParseMessage")  # its calls are checked (_codec_missing)
    assert used - checked == set()
