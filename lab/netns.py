"""Network partitions for real agents: one network namespace per server, joined by a bridge.

Layout for a network with id ID (`pp-<owner pid hex>x<random>`), subnet 10.213.X.0/24:

    root namespace: link pp-ID, 10.213.X.1 (the test process reaches every node through it)
          │ veth
    ns pp-ID-hub:   bridge br0 ── host, n1, n2, …   (no addresses; its iptables are empty, so
          │ veth                                      the root's FORWARD policy never applies)
    ns pp-ID-N:     eth0 10.213.X.(10+N), lo

A partition is a set of iptables DROP rules inside the node namespaces (INPUT from and OUTPUT to
every node outside the node's group), loaded atomically with iptables-restore; heal() loads an
empty table. The test process's link to each node is never cut, so it can watch both sides.
Nothing is ever added to the root namespace except the one veth and its address.

Cleanup: `destroy()` kills whatever still runs in the namespaces, deletes the root veth (its
peer goes with it) and the namespaces (their rules, bridge and veths go with them). It is
idempotent, runs from `__exit__`, from `NetnsCluster.stop()`, from atexit, and — for runs that
died without atexit (SIGKILL) — `create()` first sweeps networks whose owner pid is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence

from .cluster import Agent, LocalCluster, Place

PREFIX = "pp-"
SUPERNET = "10.213"
TOOLS = ("ip", "iptables", "iptables-restore")
_NAME = re.compile(rf"^{PREFIX}([0-9a-f]+)x[0-9a-f]+(?:-(?:hub|\d+))?$")


def missing_tools() -> str | None:
    """None when partitions can be made here, else what is missing (tests must fail on it)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (
            f"network partition tests need {', '.join(missing)} on PATH "
            "(apt-get install iproute2 iptables; .ci/run does this)"
        )
    if os.geteuid() != 0:
        return "network partition tests need root (ip netns, veth, iptables)"
    return None


def _run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def netns_list() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def root_links() -> list[str]:
    out = _run("ip", "-o", "link", "show")
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


class Network:
    """`size` namespaces on one bridge, plus partition/heal. Use as a context manager."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.id = f"{os.getpid():x}x{secrets.token_hex(2)}"
        self.octet: int | None = None
        self.created = False

    # ---- names and addresses ----

    @property
    def hub(self) -> str:
        return f"{PREFIX}{self.id}-hub"

    @property
    def root_link(self) -> str:
        return f"{PREFIX}{self.id}"  # at most 15 characters (IFNAMSIZ)

    def ns(self, i: int) -> str:
        return f"{PREFIX}{self.id}-{i + 1}"

    def namespaces(self) -> list[str]:
        return [self.hub, *(self.ns(i) for i in range(self.size))]

    def ip(self, i: int) -> str:
        assert self.octet is not None, "network not created"
        return f"{SUPERNET}.{self.octet}.{10 + i + 1}"

    @property
    def host_ip(self) -> str:
        assert self.octet is not None, "network not created"
        return f"{SUPERNET}.{self.octet}.1"

    # ---- life cycle ----

    def create(self) -> Network:
        if problem := missing_tools():
            raise RuntimeError(problem)
        sweep_orphans()
        atexit.register(self.destroy)
        self.created = True
        try:
            # One creator at a time, so two runs never pick the same /24.
            lock = os.path.join(tempfile.gettempdir(), "peerplane-netns.lock")
            with open(lock, "w") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                self.octet = _free_octet()
                self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        hub = self.hub
        _run("ip", "netns", "add", hub)
        _run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", hub, "link", "set", "br0", "up")
        for i in range(self.size):
            ns = self.ns(i)
            _run("ip", "netns", "add", ns)
            _run(
                "ip",
                "-n",
                hub,
                "link",
                "add",
                f"n{i + 1}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            _run("ip", "-n", hub, "link", "set", f"n{i + 1}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run(
            "ip",
            "link",
            "add",
            self.root_link,
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            hub,
        )
        _run("ip", "-n", hub, "link", "set", "host", "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.root_link)
        _run("ip", "link", "set", self.root_link, "up")

    def destroy(self) -> None:
        """Idempotent; never raises. Safe after a partial create()."""
        atexit.unregister(self.destroy)
        if self.created:
            _destroy(self.id, self.namespaces())
            self.created = False

    def __enter__(self) -> Network:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ---- faults ----

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Cut every link between nodes of different groups (node indices from 0; a node in no
        group is alone). Replaces any earlier partition. The test process reaches all nodes."""
        group_of = {i: g for g, members in enumerate(groups) for i in members}
        for i in range(self.size):
            mine = group_of.get(i, -1 - i)
            cut = [
                self.ip(j) for j in range(self.size) if j != i and group_of.get(j, -1 - j) != mine
            ]
            self._load_rules(i, cut)

    def isolate(self, i: int) -> None:
        self.partition([[i], [j for j in range(self.size) if j != i]])

    def heal(self) -> None:
        for i in range(self.size):
            self._load_rules(i, [])

    def rules(self, i: int) -> list[str]:
        return [
            r
            for r in _run("ip", "netns", "exec", self.ns(i), "iptables", "-S").splitlines()
            if not r.startswith("-P ")
        ]

    def _load_rules(self, i: int, cut: list[str]) -> None:
        lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        for ip in cut:
            lines += [f"-A INPUT -s {ip}/32 -j DROP", f"-A OUTPUT -d {ip}/32 -j DROP"]
        lines.append("COMMIT")
        _run("ip", "netns", "exec", self.ns(i), "iptables-restore", stdin="\n".join(lines) + "\n")


def _free_octet() -> int:
    used = _run("ip", "-4", "-o", "addr", "show")
    used += _run("ip", "-4", "route", "show", "table", "all")
    free = [o for o in range(1, 255) if f"{SUPERNET}.{o}." not in used]
    if not free:
        raise RuntimeError(f"no free /24 left in {SUPERNET}.0.0/16")
    return secrets.choice(free)


def _destroy(net_id: str, namespaces: list[str]) -> None:
    existing = set(netns_list())
    for ns in namespaces:
        if ns in existing:
            # Our agents should be gone already; anything left in our namespace is ours.
            for pid in _run("ip", "netns", "pids", ns, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    _run("ip", "link", "del", f"{PREFIX}{net_id}", check=False)
    for ns in namespaces:
        if ns in existing:
            _run("ip", "netns", "del", ns, check=False)


def sweep_orphans() -> list[str]:
    """Delete the networks of earlier runs whose owning process no longer exists."""
    dead: dict[str, list[str]] = {}
    for ns in netns_list():
        m = _NAME.match(ns)
        if m and not _alive(int(m.group(1), 16)):
            dead.setdefault(ns[len(PREFIX) :].split("-")[0], []).append(ns)
    for net_id, namespaces in dead.items():
        _destroy(net_id, namespaces)
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NetnsCluster(LocalCluster):
    """A LocalCluster whose agents each run in their own namespace, on Consul's default ports.

    `stop()` (and leaving the `with` block) also destroys the network; the cluster cannot be
    started again after that.
    """

    def __init__(
        self,
        base_dir: str,
        nodes: int = 3,
        datacenter: str = "dc1",
        extra_args: list[str] | None = None,
    ) -> None:
        self.net = Network(nodes).create()
        try:
            super().__init__(base_dir, nodes, datacenter, extra_args)
        except BaseException:
            self.net.destroy()
            raise

    def _places(self, nodes: int) -> list[Place]:
        return [Place(self.net.ip(i), 8500, 8300, 8503, netns=self.net.ns(i)) for i in range(nodes)]

    def index(self, agent: Agent) -> int:
        return self.agents.index(agent)

    def partition(self, groups: Sequence[Iterable[Agent]]) -> None:
        self.net.partition([[self.index(a) for a in g] for g in groups])

    def isolate(self, agent: Agent) -> None:
        self.net.isolate(self.index(agent))

    def heal(self) -> None:
        self.net.heal()

    def start(self) -> NetnsCluster:
        try:
            super().start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.net.destroy()

    def __enter__(self) -> NetnsCluster:
        return self.start()
