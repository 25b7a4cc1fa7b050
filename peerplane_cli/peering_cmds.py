"""`peerplane peering …`: generate-token, establish, read, list, delete, exported-services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .flags import CommandError, FlagSet, check_format, format_flag, http_flags
from .http import Client, StatusError, TransportError, columnize, out, print_json

PEERING_HELP = """Usage: peerplane peering <subcommand> [options] [args]

  This command has subcommands for interacting with Cluster Peering
  connections.

  Generate a peering token:

    $ peerplane peering generate-token -name west-dc

  Establish a peering connection:

    $ peerplane peering establish -name east-dc -peering-token <token>

  List all the local peering connections:

    $ peerplane peering list

  Print the status of a peering connection:

    $ peerplane peering read -name west-dc

  Delete and close a peering connection:

    $ peerplane peering delete -name west-dc

  List the services exported to a peer:

    $ peerplane peering exported-services -name west-dc

Subcommands:
    delete               Delete a peering connection
    establish            Establish a peering connection
    exported-services    List the services exported to a peer
    generate-token       Generate a peering token
    list                 List peering connections
    read                 Read a peering connection
"""


def peering_generate_token(args: list[str]) -> int:
    def more(fs: FlagSet) -> None:
        fs.mapping("meta", "Metadata to associate with the peering, formatted as key=value. "
                   "This flag may be specified multiple times to set multiple metadata fields.")
        fs.string("server-external-addresses", "", "A list of addresses to put into the "
                  "generated token, formatted as a comma-separate list. Addresses are the form "
                  "of <host or IP>:port.")

    fs, client = _named_read("peerplane peering generate-token [options] -name <peer name>",
                             args, more)
    body: dict[str, Any] = {"PeerName": fs["name"]}
    if fs["meta"]:
        body["Meta"] = fs["meta"]
    if client.partition:
        body["Partition"] = client.partition
    if fs["server-external-addresses"]:
        body["ServerExternalAddresses"] = fs["server-external-addresses"].split(",")
    try:
        res = client.request("POST", "/v1/peering/token", body=body)
    except (StatusError, TransportError) as e:
        raise CommandError(f"Error generating peering token for {fs['name']}: {e}") from None
    if fs["format"] == "json":
        print_json(res)
    else:
        out(res["PeeringToken"])
    return 0


def peering_establish(args: list[str]) -> int:
    fs = FlagSet("peerplane peering establish [options] -name <peer name> "
                 "-peering-token <token>")
    fs.string("name", "", "(Required) The local name assigned to the peer cluster.")
    fs.string("peering-token", "", "(Required) The peering token from the accepting cluster.")
    fs.mapping("meta", "Metadata to associate with the peering, formatted as key=value. This "
               "flag may be specified multiple times to set multiple meta fields.")
    http_flags(fs)
    fs.parse(args)
    if not fs["name"]:
        raise CommandError("Missing the required -name flag")
    if not fs["peering-token"]:
        raise CommandError("Missing the required -peering-token flag")
    client = Client(fs)
    body: dict[str, Any] = {"PeerName": fs["name"], "PeeringToken": fs["peering-token"]}
    if fs["meta"]:
        body["Meta"] = fs["meta"]
    if client.partition:
        body["Partition"] = client.partition
    try:
        client.request("POST", "/v1/peering/establish", body=body)
    except (StatusError, TransportError) as e:
        raise CommandError(f"Error establishing peering for {fs['name']}: {e}") from None
    out(f"Successfully established peering connection with {fs['name']}")
    return 0


def format_peering(p: dict[str, Any]) -> str:
    """Consul's `peering read` text, plus the stream status and remote this API carries."""
    lines = [f"Name:         {p.get('Name', '')}", f"ID:           {p.get('ID', '')}"]
    if p.get("Partition"):
        lines.append(f"Partition:    {p['Partition']}")
    if p.get("DeletedAt"):
        lines.append(f"DeletedAt:    {p['DeletedAt']}")
    lines.append(f"State:        {p.get('State', '')}")
    if p.get("Meta"):
        lines.append("Meta:")
        lines += [f"    {k}={v}" for k, v in sorted(p["Meta"].items())]
    lines.append("")
    lines.append(f"Peer ID:               {p.get('PeerID', '')}")
    lines.append(f"Peer Server Name:      {p.get('PeerServerName', '')}")
    lines.append(f"Peer CA Pems:          {len(p.get('PeerCAPems') or [])}")
    if p.get("PeerServerAddresses"):
        lines.append("Peer Server Addresses:")
        lines += [f"    {a}" for a in p["PeerServerAddresses"]]
    remote = p.get("Remote") or {}
    if remote.get("Datacenter") or remote.get("Partition"):
        lines.append(f"Remote Datacenter:     {remote.get('Datacenter', '')}")
        lines.append(f"Remote Partition:      {remote.get('Partition', '')}")
    ss = p.get("StreamStatus") or {}
    lines.append("")
    lines.append(f"Imported Services: {len(ss.get('ImportedServices') or [])}")
    lines.append(f"Exported Services: {len(ss.get('ExportedServices') or [])}")
    if any(ss.get(k) for k in ("LastHeartbeat", "LastReceive", "LastSend")):
        lines.append(f"Last Heartbeat:    {ss.get('LastHeartbeat') or ''}")
        lines.append(f"Last Receive:      {ss.get('LastReceive') or ''}")
        lines.append(f"Last Send:         {ss.get('LastSend') or ''}")
    if "ImportPending" in ss:  # replication freshness (peerplane, beyond Consul)
        lines.append(f"Last Import Applied: {ss.get('ImportLastApplied') or ''}")
        lines.append(f"Import Pending:      {ss.get('ImportPending', 0)}")
        lines.append(f"Export Unacked:      {ss.get('ExportUnacked', 0)}")
        if ss.get("LastNackMessage"):
            lines.append(f"Last NACK:           {ss.get('LastNack') or ''} "
                         f"{ss['LastNackMessage']}")
    lines.append("")
    lines.append(f"Create Index: {p.get('CreateIndex', 0)}")
    lines.append(f"Modify Index: {p.get('ModifyIndex', 0)}")
    return "\n".join(lines) + "\n"


def _named_read(usage: str, args: list[str],
                more: Callable[[FlagSet], None] | None = None) -> tuple[FlagSet, Client]:
    """The flags of a command about one peer (-name, -format, the HTTP flags, and `more`),
    parsed."""
    fs = FlagSet(usage)
    fs.string("name", "", "(Required) The local name assigned to the peer cluster.")
    if more is not None:
        more(fs)
    format_flag(fs)
    http_flags(fs)
    fs.parse(args)
    if not fs["name"]:
        raise CommandError("Missing the required -name flag")
    check_format(fs)
    return fs, Client(fs)


def _get_or_none(client: Client, path: str, what: str) -> Any:
    """The JSON answer, None for a 404; other failures are `Error reading <what>: ...`."""
    try:
        return client.request("GET", path)
    except StatusError as e:
        if e.status != 404:
            raise CommandError(f"Error reading {what}: {e}") from None
        return None
    except TransportError as e:
        raise CommandError(f"Error reading {what}: {e}") from None


def peering_read(args: list[str]) -> int:
    fs, client = _named_read("peerplane peering read [options] -name <peer name>", args)
    res = _get_or_none(client, f"/v1/peering/{fs['name']}", "peering")
    if res is None:
        raise CommandError(f"No peering with name {fs['name']} found.")
    if fs["format"] == "json":
        print_json(res)
    else:
        out(format_peering(res))
    return 0


def peering_list(args: list[str]) -> int:
    fs = FlagSet("peerplane peering list [options]")
    format_flag(fs)
    http_flags(fs)
    fs.parse(args)
    check_format(fs)
    client = Client(fs)
    try:
        res = client.request("GET", "/v1/peerings") or []
    except (StatusError, TransportError) as e:
        raise CommandError(f"Error listing peerings: {e}") from None
    res.sort(key=lambda p: p.get("Name", ""))
    if fs["format"] == "json":
        print_json(res)
        return 0
    if not res:
        out("There are no peering connections.")
        return 0
    rows: list[list[Any]] = [["Name", "State", "Imported Svcs", "Exported Svcs", "Meta"]]
    for p in res:
        ss = p.get("StreamStatus") or {}
        meta = ",".join(f"{k}={v}" for k, v in sorted((p.get("Meta") or {}).items()))
        rows.append([p["Name"], p["State"], len(ss.get("ImportedServices") or []),
                     len(ss.get("ExportedServices") or []), meta])
    out(columnize(rows))
    return 0


def peering_delete(args: list[str]) -> int:
    fs = FlagSet("peerplane peering delete [options] -name <peer name>")
    fs.string("name", "", "(Required) The local name assigned to the peer cluster.")
    http_flags(fs)
    fs.parse(args)
    if not fs["name"]:
        raise CommandError("Missing the required -name flag")
    client = Client(fs)
    try:
        client.request("DELETE", f"/v1/peering/{fs['name']}")
    except (StatusError, TransportError) as e:
        raise CommandError(f"Error deleting peering for {fs['name']}: {e}") from None
    out(f"Successfully submitted peering connection, {fs['name']}, for deletion")
    return 0


def peering_exported_services(args: list[str]) -> int:
    """What the `exported-services` config entry exports to one peer, one name a line (`*`:
    every local service)."""
    fs, client = _named_read(
        "peerplane peering exported-services [options] -name <peer name>", args)
    entry = _get_or_none(client, "/v1/config/exported-services/default", "exported services")
    names = {svc["Name"] for svc in (entry or {}).get("Services") or []
             if any(c.get("Peer") == fs["name"] for c in svc.get("Consumers") or [])}
    if "*" in names:  # the wildcard exports every local service
        names = set(_get_or_none(client, "/v1/catalog/services", "services") or {})
    names = sorted(names)
    if fs["format"] == "json":
        print_json(names)
    elif not names:
        out(f"No services are exported to {fs['name']}.")
    else:
        out("\n".join(names))
    return 0
