"""Consul autopilot's CleanupDeadServers (off by default): the leader removes servers it has not
heard from for `dead_after` seconds from the Raft configuration, one at a time.

Never below quorum: a dead server is removed only while the live servers are a strict majority
of the configuration (so the change itself can commit), and never when the configuration would
shrink below `min_quorum` servers (Consul's MinQuorum; default 3 here, so a three-server cluster
never shrinks on its own). A removed server that comes back with `--join` asks to be added again.
"""

from __future__ import annotations

import asyncio
import logging

from .raft import NotApplied, RaftNode, UnknownOutcome

log = logging.getLogger("peerplane.autopilot")


def dead_to_remove(servers: list[str], self_addr: str, alive: set[str],
                   min_quorum: int) -> str | None:
    """The one server to remove now, if any (pure: the rules above)."""
    dead = sorted(s for s in servers if s != self_addr and s not in alive)
    live = len(servers) - len(dead)
    if not dead or live <= len(servers) / 2 or len(servers) - 1 < min_quorum:
        return None
    return dead[0]


async def cleanup_dead_servers(node: RaftNode, dead_after: float, min_quorum: int = 3,
                               interval: float = 1.0, timeout: float = 5.0) -> None:
    """A leader routine: runs while this server leads (cancelled when it stops leading)."""
    loop = asyncio.get_running_loop()
    first_seen: dict[str, float] = {}  # a server just added has had no time to be heard
    while True:
        await asyncio.sleep(interval)
        if not node.is_leader():
            continue
        servers, now = node.members(), loop.time()
        for s in servers:
            first_seen.setdefault(s, now)
        alive = {s for s in servers
                 if node.heard_within(s, dead_after) or now - first_seen[s] < dead_after}
        victim = dead_to_remove(servers, node.self_addr, alive, min_quorum)
        if victim is None:
            continue
        log.warning("autopilot: removing dead server %s (not heard from for %.0f s)",
                    victim, dead_after)
        try:
            await node.remove_server(victim, timeout)
        except (NotApplied, UnknownOutcome) as e:
            log.warning("autopilot: removing %s: %s", victim, e)
