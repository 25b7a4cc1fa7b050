// peerplane dashboard: polls the JSON API once a second and redraws two tables.
// Everything from the API is written with textContent (peering names and meta are user data).
"use strict";

const POLL_MS = 1000;
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) localStorage.setItem("peerplane.token", hashToken);
const token = hashToken || localStorage.getItem("peerplane.token");

async function getJSON(path) {
  const headers = token ? { "X-Consul-Token": token } : {};
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${(await resp.text()).trim()}`);
  return resp.json();
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text === null || text === undefined ? "\u2013" : String(text);
  tr.appendChild(td);
  return td;
}

function badge(tr, text, cls, col) {
  const td = document.createElement("td");
  td.dataset.col = col;
  const span = document.createElement("span");
  span.className = "badge " + (cls || text);
  span.textContent = text;
  td.appendChild(span);
  tr.appendChild(td);
}

// Imported / exported services of a peering: the count, the names as a tooltip.
function services(tr, names, col) {
  const list = names || [];
  const td = cell(tr, list.length, "num");
  td.dataset.col = col;
  td.title = list.join(", ");
}

function ago(ts) {
  if (!ts) return null;
  const secs = (Date.now() - Date.parse(ts)) / 1000;
  if (!isFinite(secs)) return ts;
  return secs < 1 ? "just now" : `${secs.toFixed(0)}s ago`;
}

function contact(ms) {
  if (ms === null || ms === undefined) return null;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function drawServers(view) {
  document.getElementById("datacenter").textContent = view.Datacenter;
  document.getElementById("served-by").textContent = view.ServedBy;
  const leader = document.getElementById("leader");
  leader.textContent = view.Leader ? `${view.Leader.Name} (${view.Leader.Address})` : "no leader";
  leader.dataset.leader = view.Leader ? view.Leader.Name : "";
  document.getElementById("server-count").textContent = `(${view.Servers.length})`;
  const body = document.querySelector("#servers tbody");
  const rows = view.Servers.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.node = s.Name || s.Address;
    tr.dataset.role = s.State;
    if (s.Leader) tr.className = "leader";
    cell(tr, s.Name || "?");
    cell(tr, s.Address);
    badge(tr, s.State, s.State, "role");
    cell(tr, s.Term, "num");
    cell(tr, s.CommitIndex, "num");
    cell(tr, s.AppliedIndex, "num");
    cell(tr, contact(s.LastContactMs), "num");
    if (s.Reachable) badge(tr, s.Healthy ? "healthy" : "unhealthy", null, "health");
    else cell(tr, s.Error).title = s.Error;
    return tr;
  });
  body.replaceChildren(...rows);
}

function drawPeerings(list, note) {
  document.getElementById("peering-count").textContent = `(${list.length})`;
  document.getElementById("peerings-note").textContent =
    note || (list.length ? "" : "No peerings yet.");
  const body = document.querySelector("#peerings tbody");
  const rows = list.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.peering = p.Name;
    tr.dataset.state = p.State;
    cell(tr, p.Name);
    badge(tr, p.State, p.State, "state");
    const remote = p.Remote || {};
    cell(tr, remote.Datacenter ? `${remote.Datacenter}/${remote.Partition || "default"}` : null);
    const ss = p.StreamStatus || {};
    services(tr, ss.ImportedServices, "imported");
    services(tr, ss.ExportedServices, "exported");
    cell(tr, ago(ss.LastHeartbeat));
    cell(tr, ago(ss.LastReceive));
    cell(tr, ago(ss.LastSend));
    cell(tr, p.PeerServerName || null);
    cell(tr, p.ModifyIndex, "num");
    return tr;
  });
  body.replaceChildren(...rows);
}

async function refresh() {
  const status = document.getElementById("status");
  const errors = [];
  try {
    drawServers(await getJSON("/v1/internal/ui/cluster"));
  } catch (e) {
    errors.push(e.message);
  }
  try {
    drawPeerings(await getJSON("/v1/peerings"));
  } catch (e) {
    // No leader (or it is unreachable): show this server's own, possibly stale, copy.
    try {
      drawPeerings(await getJSON("/v1/peerings?stale"),
        "Stale view from this server (the leader did not answer); stream status unknown.");
    } catch (e2) {
      errors.push(e2.message);
    }
  }
  status.className = "status " + (errors.length ? "error" : "ok");
  status.textContent = errors.length ? errors.join("; ")
    : `updated ${new Date().toLocaleTimeString()}`;
}

async function loop() {
  for (;;) {
    const started = Date.now();
    await refresh();
    await new Promise((r) => setTimeout(r, Math.max(100, POLL_MS - (Date.now() - started))));
  }
}

loop();
