"""Consul's StreamStatus shapes (the in-memory stream tracker; never replicated)."""

from __future__ import annotations

from typing import Any


def empty_status() -> dict[str, Any]:
    """What Consul shows when its tracker has no entry for a peering: every field null. A
    peering whose stream is (or was) up has lists for the services instead."""
    return {"ImportedServices": None, "ExportedServices": None, "LastHeartbeat": None,
            "LastReceive": None, "LastSend": None}
