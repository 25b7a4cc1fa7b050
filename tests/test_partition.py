"""Network partitions on real processes: every agent in its own network namespace, links cut
with iptables DROP rules, so Raft and forwarded HTTP traffic really stop crossing.

Measurements are printed (run with -s) and attached as junit properties; nothing is asserted
on wall-clock time except the bounded waits themselves.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from lab.cluster import Agent, eventually
from lab.http import Reply
from lab.netns import (
    SUPERNET,
    NetnsCluster,
    Network,
    missing_tools,
    netns_list,
    root_links,
    sweep_orphans,
)

pytestmark = pytest.mark.integration

# Requests that may cross a cut link, or ask a node that lost its leader, stay short. Reads on
# the isolated node may wait the agent's hold time (--hold-timeout 5 in tests) before a 503.
SHORT = 1.0
HOLD_WAIT = 12.0


@pytest.fixture
def net_tools() -> None:
    if problem := missing_tools():
        pytest.fail(problem, pytrace=False)  # never skip: CI installs these tools


@pytest.fixture
def netns_cluster(tmp_path, net_tools) -> Iterator[NetnsCluster]:
    with NetnsCluster(str(tmp_path)) as c:
        yield c


def leader_of(agent: Agent) -> str:
    return agent.call("GET", "/v1/status/leader", timeout=SHORT).json()


def names(reply: Reply) -> list[str]:
    assert reply.status == 200, (reply.status, reply.text)
    return [p["Name"] for p in reply.json()]


def stale_names(agent: Agent) -> list[str]:
    return names(agent.call("GET", "/v1/peerings?stale", timeout=SHORT))


def until(cond: Callable[[], bool], timeout: float) -> float:
    """Seconds until cond() holds (polled every 20 ms; errors count as false)."""
    start = time.monotonic()
    eventually(cond, timeout, interval=0.02)
    return time.monotonic() - start


def new_leader_among(c: NetnsCluster, pool: list[Agent], old: Agent) -> Agent | None:
    views = {leader_of(a) for a in pool}
    if len(views) == 1 and (view := views.pop()) and view != old.raft_addr:
        return c.by_raft(view)
    return None


def last_contact_ms(agent: Agent) -> int:
    reply = agent.call("GET", "/v1/peerings?stale", timeout=SHORT)
    return int(reply.headers["X-Consul-LastContact"])


def term(agent: Agent) -> int:
    return int(agent.call("GET", "/v1/agent/self", timeout=SHORT).json()["Stats"]["raft"]["term"])


def report(record_property: Callable[[str, Any], None], key: str, value: Any) -> None:
    record_property(key, value)
    print(f"\n[partition] {key}: {value}", file=sys.stderr)


def timed(agent: Agent, method: str, path: str, body: Any = None) -> dict[str, Any]:
    start = time.monotonic()
    try:
        r = agent.call(method, path, body, timeout=HOLD_WAIT)
    except OSError as e:
        return {"error": repr(e), "seconds": round(time.monotonic() - start, 2)}
    return {
        "status": r.status,
        "seconds": round(time.monotonic() - start, 2),
        "body": r.text[:120],
        **{
            h: r.headers[h]
            for h in (
                "X-Consul-KnownLeader",
                "X-Consul-LastContact",
                "X-Consul-Effective-Consistency",
                "X-Consul-Index",
            )
            if h in r.headers
        },
    }


def test_isolated_leader_is_replaced_and_steps_down(netns_cluster, record_property):
    c = netns_cluster
    old = c.leader()
    rest = [a for a in c.agents if a is not old]
    assert c.agents[0].call("POST", "/v1/peering/token", {"PeerName": "before"}).status == 200

    c.isolate(old)
    start = time.monotonic()
    # A default read on the old leader at once: its lease (0.5 s) may still let it serve; no
    # other leader can exist before the election timeout (>= 1 s) anyway.
    early_pool = ThreadPoolExecutor(1)
    early = early_pool.submit(timed, old, "GET", "/v1/peerings")
    new_at: float | None = None
    down_at: float | None = None
    new: Agent | None = None
    while time.monotonic() - start < 20 and (new_at is None or down_at is None):
        if new_at is None:
            try:
                new = new_leader_among(c, rest, old)
            except OSError:
                new = None
            if new is not None:
                new_at = time.monotonic() - start
        if down_at is None:
            try:
                if leader_of(old) != old.raft_addr:
                    down_at = time.monotonic() - start
            except OSError:
                pass
        time.sleep(0.02)
    report(record_property, "seconds_to_new_leader", new_at)
    report(record_property, "seconds_until_old_leader_steps_down", down_at)
    report(
        record_property,
        "old_leader_gone_before_new_one_by",
        None if new_at is None or down_at is None else round(new_at - down_at, 2),
    )
    report(record_property, "isolated_old_leader_default_right_after_cut", early.result())
    early_pool.shutdown()
    assert new_at is not None and new is not None, "the majority elected no new leader in 20 s"
    assert down_at is not None, "the isolated old leader still names itself after 20 s"

    # Writes through either majority node commit (a follower's command crosses the bridge
    # over the Raft link; it answers itself).
    for i, a in enumerate(rest):
        reply = a.call("POST", "/v1/peering/token", {"PeerName": f"during-{i}"}, timeout=10)
        assert reply.status == 200, reply.text
        assert reply.headers["X-Peerplane-Served-By"] == a.name
    assert names(new.call("GET", "/v1/peerings", timeout=5)) == ["before", "during-0", "during-1"]

    # What the cut-off old leader answers, in every read mode and for a write (concurrently:
    # the non-stale ones may each wait the hold time).
    probes = {
        "stale": ("GET", "/v1/peerings?stale", None),
        "default": ("GET", "/v1/peerings", None),
        "consistent": ("GET", "/v1/peerings?consistent", None),
        "write": ("POST", "/v1/peering/token", {"PeerName": "on-isolated"}),
    }
    with ThreadPoolExecutor(len(probes)) as pool:
        futures = {k: pool.submit(timed, old, *v) for k, v in probes.items()}
        seen = {k: f.result() for k, f in futures.items()}
    for k, v in seen.items():
        report(record_property, f"isolated_old_leader_{k}", v)
    assert seen["stale"]["status"] == 200
    assert "during-0" not in seen["stale"]["body"]  # it cannot have the majority's writes
    # Anything but stale must not answer 200 from the minority: it would be stale data, or a
    # write acknowledged without a quorum.
    for k in ("default", "consistent", "write"):
        assert seen[k].get("status") != 200, (k, seen[k])


def test_healed_old_leader_rejoins_as_follower_with_majority_data(netns_cluster, record_property):
    c = netns_cluster
    old = c.leader()
    rest = [a for a in c.agents if a is not old]
    c.isolate(old)
    new = c.leader(among=rest, timeout=20)
    assert new is not old
    reply = rest[0].call(
        "POST", "/v1/peering/token", {"PeerName": "written-in-partition"}, timeout=10
    )
    assert reply.status == 200, reply.text
    assert "written-in-partition" not in names(old.call("GET", "/v1/peerings?stale", timeout=5))
    # Stay cut long enough for the old leader's Raft connections to time out (PySyncObj's
    # connectionTimeout is 3.5 s here) and for it to try elections of its own.
    until(lambda: last_contact_ms(old) > 5000, 20)
    report(record_property, "raft_terms_before_heal", {"old": term(old), "new": term(new)})

    start = time.monotonic()
    c.heal()
    healed = time.monotonic() - start
    leader = c.leader(timeout=30)  # all three agree again
    agreed = time.monotonic() - start
    assert leader is not old, "the old leader lacks committed entries and cannot win"
    synced = until(lambda: "written-in-partition" in stale_names(old), 30)
    report(record_property, "seconds_to_remove_rules", round(healed, 3))
    report(record_property, "seconds_after_heal_until_all_agree", round(agreed, 2))
    report(record_property, "seconds_after_heal_until_old_leader_has_data", round(synced, 2))
    report(record_property, "leader_after_heal", "unchanged" if leader is new else "re-elected")
    report(record_property, "raft_term_after_heal", term(leader))
    stats = old.call("GET", "/v1/agent/self", timeout=5).json()["Stats"]["raft"]
    assert stats["state"] == "Follower", stats
    # And it serves default reads again, at the new leader's read index.
    assert "written-in-partition" in names(old.call("GET", "/v1/peerings", timeout=10))


def _leftovers(net: Network, octet: int) -> list[str]:
    ours = [ns for ns in netns_list() if ns.startswith(f"pp-{net.id}")]
    ours += [link for link in root_links() if link == net.root_link]
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True
    )
    ours += [
        line
        for line in (addrs.stdout + routes.stdout).splitlines()
        if f"{SUPERNET}.{octet}." in line
    ]
    return ours


def root_rules() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True).stdout


def test_cleanup_leaves_no_namespaces_links_or_rules(tmp_path, net_tools):
    rules_before = root_rules()

    # A network torn down by an exception, with a partition in place and a process inside.
    net = Network(3)
    with pytest.raises(RuntimeError, match="boom"), net:
        net.partition([[0], [1, 2]])
        assert net.rules(0) and net.rules(1)
        sleeper = subprocess.Popen(["ip", "netns", "exec", net.ns(0), "sleep", "60"])
        assert _leftovers(net, net.octet)
        raise RuntimeError("boom")
    assert net.octet is not None
    assert _leftovers(net, net.octet) == []
    assert sleeper.wait(10) is not None

    # A whole cluster, partitioned and then stopped.
    c = NetnsCluster(str(tmp_path)).start()
    procs = [a.proc for a in c.agents]
    c.isolate(c.agents[0])
    c.stop()
    assert c.net.octet is not None
    assert _leftovers(c.net, c.net.octet) == []
    assert all(p is not None and p.poll() is not None for p in procs)

    # No rule was ever added to the root namespace (its other rules are not ours to compare:
    # docker may change them meanwhile).
    assert SUPERNET not in rules_before + root_rules()


def test_networks_of_dead_runs_are_swept(net_tools):
    dead = subprocess.Popen(["true"])
    dead.wait()
    net_id = f"{dead.pid:x}x0"
    subprocess.run(["ip", "netns", "add", f"pp-{net_id}-hub"], check=True)
    subprocess.run(["ip", "netns", "add", f"pp-{net_id}-1"], check=True)
    try:
        assert net_id in sweep_orphans()
        assert not [ns for ns in netns_list() if ns.startswith(f"pp-{net_id}-")]
    finally:
        for ns in (f"pp-{net_id}-hub", f"pp-{net_id}-1"):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_stale_reads_on_an_isolated_leader_say_how_stale_they_are_and_max_stale_stops_them(
    netns_cluster,
):
    c = netns_cluster
    old = c.leader()
    rest = [a for a in c.agents if a is not old]
    c.isolate(old)
    new = eventually(lambda: new_leader_among(c, rest, old), timeout=20)
    assert new.call("POST", "/v1/peering/token", {"PeerName": "majority-write"},
                    timeout=10).status == 200
    # It knows it lost the majority once its lease ran out, and says so.
    eventually(lambda: old.call("GET", "/v1/peerings?stale", timeout=5).headers[
        "X-Consul-KnownLeader"] == "false", timeout=10)
    first = old.call("GET", "/v1/peerings?stale", timeout=5)
    time.sleep(1.2)
    second = old.call("GET", "/v1/peerings?stale", timeout=5)
    assert first.status == second.status == 200
    assert "majority-write" not in names(second)  # a stale read really is stale here
    assert second.headers["X-Consul-Effective-Consistency"] == "stale"
    assert int(second.headers["X-Consul-LastContact"]) >= int(
        first.headers["X-Consul-LastContact"]) + 1000
    bounded = old.call("GET", "/v1/peerings?max_stale=1s", timeout=15)
    assert (bounded.status, bounded.text) == (503, "No cluster leader")
    # The same bound on a majority follower is met, so it answers from its own fresh state.
    follower = next(a for a in rest if a is not new)
    fresh = follower.call("GET", "/v1/peerings?max_stale=1s", timeout=10)
    assert fresh.status == 200 and "majority-write" in names(fresh)


class _Writer:
    """Writes through one server, one after another, until stopped; keeps every outcome."""

    def __init__(self, agent: Agent, prefix: str) -> None:
        self.agent, self.prefix, self.outcomes = agent, prefix, []
        self._stop = False
        self._pool = ThreadPoolExecutor(1)
        self._done = self._pool.submit(self._run)

    def _run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            try:
                reply = self.agent.call("POST", "/v1/peering/token",
                                        {"PeerName": f"{self.prefix}-{n}"}, timeout=HOLD_WAIT)
                self.outcomes.append((reply.status, reply.text[:80]))
            except OSError as e:
                self.outcomes.append((0, repr(e)))
            time.sleep(0.02)

    def stop(self) -> list[tuple[int, str]]:
        self._stop = True
        self._done.result()
        self._pool.shutdown()
        return self.outcomes


def _heal_and_watch(c: NetnsCluster, leader: Agent, writer: _Writer,
                    record_property: Callable[[str, Any], None]) -> None:
    before = term(leader)
    c.heal()
    time.sleep(4.0)  # several election timeouts: a disruptive rejoin would have happened
    outcomes = writer.stop()
    report(record_property, "writes_during_partition_and_heal", len(outcomes))
    assert c.leader(timeout=10) is leader
    assert term(leader) == before, "the healed server deposed the leader"
    assert [o for o in outcomes if o[0] != 200] == []
    assert len(outcomes) > 10


def test_healing_an_isolated_follower_keeps_the_leader_and_fails_no_write(
        netns_cluster, record_property):
    c = netns_cluster
    leader = c.leader()
    follower = next(a for a in c.agents if a is not leader)
    writer = _Writer(leader, "follower-cut")
    c.isolate(follower)
    # Long enough to miss many heartbeats and try elections of its own (PreVote: refused).
    until(lambda: last_contact_ms(follower) > 4000, 20)
    _heal_and_watch(c, leader, writer, record_property)
    until(lambda: f"follower-cut-{len(writer.outcomes)}" in stale_names(follower), 20)


def test_healing_the_isolated_old_leader_keeps_the_new_leader_and_fails_no_write(
        netns_cluster, record_property):
    c = netns_cluster
    old = c.leader()
    rest = [a for a in c.agents if a is not old]
    c.isolate(old)
    new = c.leader(among=rest, timeout=20)
    writer = _Writer(new, "leader-cut")
    until(lambda: last_contact_ms(old) > 5000, 20)
    _heal_and_watch(c, new, writer, record_property)
    until(lambda: f"leader-cut-{len(writer.outcomes)}" in stale_names(old), 20)


def backtracks(agent: Agent) -> int:
    stats = agent.call("GET", "/v1/agent/self", timeout=SHORT).json()["Stats"]["raft"]
    return int(stats["log_backtracks"])


def _cut_off_with_uncommitted_writes(c: NetnsCluster, writes: int,
                                     meta: dict[str, str] | None = None) -> Agent:
    """Isolate the leader, let it append 20 writes that cannot commit, have the new leader
    commit `writes` more (names `majority-<i>`), and wait until the links have timed out and
    dropped. Returns the old leader."""
    old = c.leader()
    rest = [a for a in c.agents if a is not old]
    c.isolate(old)
    with ThreadPoolExecutor(max_workers=20) as pool:  # appended there; they cannot commit
        outcomes = list(pool.map(
            lambda i: old.call("POST", "/v1/peering/token", {"PeerName": f"cut-off-{i}"},
                               timeout=HOLD_WAIT).status, range(20)))
    assert set(outcomes) == {503}, outcomes
    new = c.leader(among=rest, timeout=20)
    for i in range(writes):
        reply = new.call("POST", "/v1/peering/token",
                         {"PeerName": f"majority-{i}", "Meta": meta or {}}, timeout=10)
        assert reply.status == 200, reply.text
    until(lambda: last_contact_ms(old) > 5000, 20)  # the links time out and drop
    return old


def test_a_healed_old_leader_drops_its_uncommitted_entries_in_one_round_trip(netns_cluster):
    """The old leader appends writes after the cut that never commit. The new leader's appends
    to it, lost while their link still looked up, move its next index past them, and a
    reconnect does not reset it: PySyncObj alone then stepped back one entry per round trip.
    Now the old leader answers with its commit index and is back after one refused append."""
    c = netns_cluster
    old = _cut_off_with_uncommitted_writes(c, 30)
    before = backtracks(old)
    c.heal()
    until(lambda: "majority-29" in stale_names(old), 30)
    assert backtracks(old) - before <= 2
    assert not any(n.startswith("cut-off-") for n in stale_names(old))


def test_a_healed_old_leader_catches_up_when_the_new_entries_span_several_appends(
        netns_cluster):
    """As above, but the new leader's entries past the old leader's uncommitted ones take more
    than one append message (PySyncObj batches 64 KB). The old leader refuses the first append
    of the resend (term mismatch: resume after its commit index) and the next one (its log is
    shorter: resume after its last entry). The leader took the later answer, which skips the
    entries the first one refused, so the same resend went out every round and the old leader
    never applied anything again (its reads: 503 for as long as it ran). A refusal now moves
    the leader's next index back only."""
    c = netns_cluster
    meta = {f"k{j}": "v" * 500 for j in range(8)}  # ~4 KB an entry: 40 of them span 3 appends
    old = _cut_off_with_uncommitted_writes(c, 40, meta)
    c.heal()
    until(lambda: "majority-39" in stale_names(old), 30)
    assert not any(n.startswith("cut-off-") for n in stale_names(old))
    reply = old.call("GET", "/v1/peering/majority-39?consistent", timeout=HOLD_WAIT)
    assert (reply.status, reply.json()["Name"]) == (200, "majority-39")
