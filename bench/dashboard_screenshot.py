"""Write a PNG screenshot of the dashboard (`/ui/`) with headless Chromium.

    make screenshot                                   # -> dashboard.png
    python bench/dashboard_screenshot.py --out shot.png
    python bench/dashboard_screenshot.py --url http://127.0.0.1:8500/ui/ --out shot.png

Without --url it starts two local three-server clusters (dc1 and dc2, real processes on free
127.0.0.1 ports), peers them (token from dc1, establish on dc2), waits for the dashboard to show
the three servers, the leader and the peering (ACTIVE when the stream comes up in time), and
shoots dc1's dashboard. Needs Debian's `chromium` (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from harness.browser import Browser  # noqa: E402
from lab.cluster import LocalCluster, eventually  # noqa: E402

READY = (
    "document.querySelectorAll('#servers tbody tr').length > 0 && "
    "!!document.getElementById('leader').dataset.leader"
)


async def shoot(url: str, out: str, expect: str = READY, width: int = 1280,
                height: int = 720) -> None:
    async with Browser(width, height) as browser:
        page = await browser.new_page(url)
        await page.wait_for(expect, timeout=30)
        await asyncio.sleep(1.2)  # one more poll, so "updated" and the ages are fresh
        await page.screenshot(out)


def with_clusters(out: str) -> None:
    with tempfile.TemporaryDirectory(prefix="pp-shot-") as tmp:
        dc1 = LocalCluster(os.path.join(tmp, "dc1"), datacenter="dc1",
                           extra_args=["--peering-heartbeat", "1"])
        dc2 = LocalCluster(os.path.join(tmp, "dc2"), datacenter="dc2",
                           extra_args=["--peering-heartbeat", "1"])
        with dc1, dc2:
            token = dc1.agents[0].call("POST", "/v1/peering/token",
                                       {"PeerName": "dc2-default"}).json()["PeeringToken"]
            reply = dc2.agents[0].call("POST", "/v1/peering/establish",
                                       {"PeerName": "dc1-default", "PeeringToken": token})
            if reply.status != 200:
                print(f"establish: {reply.status} {reply.text}", file=sys.stderr)

            def active() -> bool:
                rows = dc1.agents[0].call("GET", "/v1/peerings").json()
                return any(r["State"] == "ACTIVE" for r in rows)

            try:
                eventually(active, timeout=20)
            except AssertionError:
                print("the peering is not ACTIVE yet; shooting it as it is", file=sys.stderr)
            expect = READY + (" && document.querySelectorAll('#servers tbody tr').length === 3"
                              " && !!document.querySelector('#peerings tr[data-peering]')")
            asyncio.run(shoot(dc1.agents[0].url("/ui/"), out, expect))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running dashboard (default: start two local clusters)")
    ap.add_argument("--out", default="dashboard.png")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if args.url:
        asyncio.run(shoot(args.url, out))
    else:
        with_clusters(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
