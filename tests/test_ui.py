"""The dashboard (`/ui/`) in headless Chromium (Debian's `chromium`, `--headless --no-sandbox`),
driven over the DevTools protocol against a real three-server cluster: it loads on every node,
shows the three servers and the leader, shows a new peering within a few seconds of its
creation, follows a leader failure, and shows what each peering imports and exports."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from harness.browser import Browser
from lab.cluster import LocalCluster, eventually
from lab.peering import STREAM_ARGS, establish, token, wait_state

pytestmark = pytest.mark.integration

ROWS = "document.querySelectorAll('#servers tbody tr').length"
LEADER = "document.getElementById('leader').dataset.leader"
# "A few seconds": the page polls once a second; this bound leaves room for a loaded CI box.
NEW_PEERING_WITHIN = 5.0


def row_js(name: str) -> str:
    return f"document.querySelector('#peerings tr[data-peering=\"{name}\"]')"


def servers_js() -> str:
    return ("Array.from(document.querySelectorAll('#servers tbody tr'))"
            ".map(r => [r.dataset.node, r.dataset.role])")


def test_every_node_serves_the_page(cluster):
    for agent in cluster.agents:
        page = agent.call("GET", "/ui/")
        assert page.status == 200
        assert page.headers["Content-Type"].startswith("text/html")
        assert '<script src="/ui/app.js"></script>' in page.text
        for asset, kind in (("/ui/app.js", "application/javascript"),
                            ("/ui/style.css", "text/css")):
            reply = agent.call("GET", asset)
            assert reply.status == 200 and reply.headers["Content-Type"].startswith(kind)
        assert agent.call("GET", "/ui/missing.js").status == 404
    # / and /ui lead to the dashboard, as in Consul.
    for path in ("/", "/ui"):
        moved = cluster.agents[0].call("GET", path)  # urllib follows the redirect
        assert moved.status == 200 and moved.body == cluster.agents[0].call("GET", "/ui/").body


def roles(cluster, leader) -> dict[str, str]:
    return {a.name: ("leader" if a is leader else "follower") for a in cluster.agents}


async def leader_once_shown(cluster, page, timeout: float = 15.0):
    """The cluster's leader, once the page shows it: a cluster just started may still change
    leader once (seen in CI), and the page catches up at its next poll."""
    deadline = time.monotonic() + timeout
    while True:
        leader = cluster.leader()
        if (await page.evaluate(LEADER) == leader.name
                and dict(await page.evaluate(servers_js())) == roles(cluster, leader)
                or time.monotonic() > deadline):
            return leader
        await asyncio.sleep(0.2)


async def test_dashboard_shows_servers_leader_and_new_peerings(cluster):
    leader = cluster.leader()
    follower = next(a for a in cluster.agents if a is not leader)
    async with Browser() as browser:
        page = await browser.new_page(follower.url("/ui/"))
        await page.wait_for(f"{ROWS} === 3 && {LEADER}", timeout=30)
        leader = await leader_once_shown(cluster, page)
        assert await page.evaluate(LEADER) == leader.name
        rows = dict(await page.evaluate(servers_js()))
        assert rows == roles(cluster, leader)
        header = await page.evaluate("document.getElementById('leader').textContent")
        assert header == f"{leader.name} ({leader.raft_addr})"
        assert await page.evaluate("document.getElementById('served-by').textContent") == \
            follower.name
        # Term and indexes of every server are numbers.
        cells = await page.evaluate(
            "Array.from(document.querySelectorAll('#servers tbody tr'))"
            ".map(r => Array.from(r.cells).slice(3, 6).map(c => c.textContent))")
        assert all(c.isdigit() for row in cells for c in row), cells

        # A peering created through another node appears within a few seconds.
        assert await page.evaluate(row_js("ui-fresh")) is None
        reply = cluster.agents[0].call("POST", "/v1/peering/token", {"PeerName": "ui-fresh"})
        assert reply.status == 200, reply.text
        created = time.monotonic()
        await page.wait_for(f"{row_js('ui-fresh')} !== null", timeout=30)
        shown_after = time.monotonic() - created
        assert shown_after < NEW_PEERING_WITHIN, f"shown after {shown_after:.1f}s"
        assert await page.evaluate(f"{row_js('ui-fresh')}.dataset.state") == "PENDING"

        # A change of state shows too: deleting it.
        assert cluster.agents[1].call("DELETE", "/v1/peering/ui-fresh").status == 200
        await page.wait_for(f"{row_js('ui-fresh')} === null || "
                            f"['DELETING', 'TERMINATED'].includes("
                            f"{row_js('ui-fresh')}.dataset.state)", timeout=30)
        assert page.exceptions == []


async def test_dashboard_follows_a_leader_failure(fresh_cluster):
    c = fresh_cluster
    old = c.leader()
    watcher = next(a for a in c.agents if a is not old)
    async with Browser() as browser:
        page = await browser.new_page(watcher.url("/ui/"))
        await page.wait_for(f"{LEADER} === '{old.name}'", timeout=30)
        old.kill()
        new = c.leader(among=[a for a in c.agents if a is not old], timeout=30)
        await page.wait_for(f"{LEADER} === '{new.name}'", timeout=30)
        await page.wait_for(
            f"document.querySelector('#servers tr[data-node=\"{old.name}\"]')"
            f".dataset.role === 'unreachable'", timeout=30)
        old.start()
        old.wait_ready()
        eventually(lambda: old.call("GET", "/v1/status/leader").json() == new.raft_addr)
        await page.wait_for(
            f"document.querySelector('#servers tr[data-node=\"{old.name}\"]')"
            f".dataset.role === 'follower'", timeout=30)
        assert page.exceptions == []


def services_cell_js(peering: str, col: str) -> str:
    cell = f"{row_js(peering)}?.querySelector('td[data-col=\"{col}\"]')"
    return f"[{cell}?.textContent, {cell}?.title]"


async def test_dashboard_shows_imported_and_exported_services_per_peering(tmp_path):
    with LocalCluster(str(tmp_path / "dc1"), extra_args=STREAM_ARGS) as dc1, \
            LocalCluster(str(tmp_path / "dc2"), datacenter="dc2", extra_args=STREAM_ARGS) as dc2:
        assert establish(dc2, "dc1", token(dc1, "dc2")).status == 200
        wait_state(dc2, "dc1", "ACTIVE")
        for name in ("web", "api"):
            reply = dc1.agents[1].call("PUT", "/v1/catalog/register", {
                "Node": f"{name}-node", "Address": "10.0.0.1", "Service": {"Service": name}})
            assert reply.text == "true"
        reply = dc1.agents[2].call("PUT", "/v1/config", {
            "Kind": "exported-services", "Name": "default",
            "Services": [{"Name": n, "Consumers": [{"Peer": "dc2"}]} for n in ("web", "api")]})
        assert reply.text == "true"
        async with Browser() as browser:
            exporter = await browser.new_page(dc1.agents[0].url("/ui/"))
            importer = await browser.new_page(dc2.agents[1].url("/ui/"))
            want = ["2", "api, web"]
            await exporter.wait_for(f"JSON.stringify({services_cell_js('dc2', 'exported')}) "
                                    f"=== '{json.dumps(want, separators=(',', ':'))}'",
                                    timeout=30)
            await importer.wait_for(f"JSON.stringify({services_cell_js('dc1', 'imported')}) "
                                    f"=== '{json.dumps(want, separators=(',', ':'))}'",
                                    timeout=30)
            assert await importer.evaluate(services_cell_js("dc1", "exported")) == ["0", ""]
            assert exporter.exceptions == [] and importer.exceptions == []
