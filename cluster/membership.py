"""Raft membership on disk and on the wire: the persisted server list, and joining a live cluster.

PySyncObj changes membership one server at a time through log entries (`dynamicMembershipChange`)
and applies a change when the entry is appended, not committed. What it does not do is remember
the result across a restart except inside snapshots (PySyncObj issue #133: the snapshot's view
overrides the constructor's), nor let a server find the cluster: a newcomer must already know
every member's address, because members drop connections from addresses they do not know.

- `<data-dir>/raft-peers.json` holds the servers this node last knew (written, fsynced, on every
  change); a restart starts from it instead of the `--join` list, then replays the journal.
- A server started with `--join` and no `--bootstrap-expect` on an empty data dir asks a live
  member for its view (PySyncObj's `status` utility message on the Raft port, encrypted with
  the cluster secret), starts with those servers as peers, and asks to be added (`add`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from pysyncobj.utility import TcpUtility, UtilityException

log = logging.getLogger("peerplane.raft")

PEERS_FILE = "raft-peers.json"
_PARTNER = "partner_node_status_server_"


def load_servers(data_dir: str) -> list[str] | None:
    """The servers persisted by the last run (self included), or None on a fresh data dir."""
    try:
        with open(os.path.join(data_dir, PEERS_FILE)) as f:
            servers = json.load(f)["Servers"]
    except FileNotFoundError:
        return None
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise ValueError(f"{PEERS_FILE} in {data_dir} is not a list of addresses")
    return servers


def store_servers(data_dir: str, servers: list[str]) -> None:
    path = os.path.join(data_dir, PEERS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"Servers": sorted(servers)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _utility(addr: str, password: str, command: list[Any], timeout: float) -> Any:
    """One PySyncObj utility command (blocking; run it in a thread)."""
    try:
        return TcpUtility(password, timeout=timeout).executeCommand(addr, command)
    except UtilityException as e:
        raise ConnectionError(f"{addr}: {e}") from None


def cluster_view(addr: str, password: str, timeout: float = 5.0) -> tuple[list[str], str | None]:
    """(servers, leader) as the member at `addr` sees them."""
    status = _utility(addr, password, ["status"], timeout)
    if not isinstance(status, dict) or "self" not in status:
        raise ConnectionError(f"{addr}: unexpected status reply {status!r}")
    servers = [str(status["self"])] + [k[len(_PARTNER):] for k in status if k.startswith(_PARTNER)]
    leader = status.get("leader")
    return sorted(servers), (str(leader) if leader is not None else None)


def discover(join: list[str], password: str) -> tuple[list[str], str]:
    """(servers, whom to ask for changes): the leader's view when there is a leader (a
    follower may lag a change), else the first member that answered."""
    errors = []
    for addr in join:
        try:
            servers, leader = cluster_view(addr, password)
            if leader is not None and leader != addr:
                servers, _ = cluster_view(leader, password)
            return servers, leader or addr
        except (ConnectionError, OSError) as e:
            errors.append(str(e))
    raise ConnectionError("no member to join answered: " + "; ".join(errors))


def joining(data_dir: str, join: list[str], bootstrap_expect: int | None) -> bool:
    """A server started with --join and without --bootstrap-expect joins a running cluster;
    only on its first start (afterwards it knows its servers from PEERS_FILE)."""
    return bool(join) and not bootstrap_expect and load_servers(data_dir) is None


async def wait_for_view(join: list[str], password: str, retry: float = 1.0) -> list[str]:
    """The running cluster's servers, asking the --join members until one answers."""
    while True:
        try:
            servers, _ = await asyncio.to_thread(discover, join, password)
            return servers
        except (ConnectionError, OSError) as e:
            log.warning("join: %s; retrying", e)
            await asyncio.sleep(retry)


async def ensure_member(self_addr: str, join: list[str], password: str,
                        retry: float = 1.0) -> None:
    """Until the leader's view includes this server, ask to be added (one change at a time:
    a request refused because another change is in flight is simply asked again). A server
    removed with remove-peer and restarted with --join comes back, as in Consul."""
    started = time.monotonic()
    while True:
        try:
            servers, target = await asyncio.to_thread(discover, join, password)
            if self_addr in servers or await asyncio.to_thread(
                    ask_to_add, target, password, self_addr):
                log.info("join: %s is a voting member (%.1f s)", self_addr,
                         time.monotonic() - started)
                return
        except (ConnectionError, OSError) as e:
            log.warning("join: %s; retrying", e)
        await asyncio.sleep(retry)


def ask_to_add(addr: str, password: str, self_addr: str, timeout: float = 10.0) -> bool:
    """Ask the member at `addr` to add this server (it forwards to the leader); True once the
    change is applied there. False when refused (another change in flight) or timed out."""
    reply = _utility(addr, password, ["add", self_addr], timeout)
    return isinstance(reply, str) and reply.startswith("SUCCESS")
