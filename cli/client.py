"""Consul-style client commands: `peering …`, `operator raft list-peers`, `members`, `tls …`.

Flags parse as Go's `flag` package does (`-name x`, `-name=x`, `--name x`; parsing stops at the
first argument that is not a flag), the HTTP flags are Consul's (`-http-addr`, `-token`,
`-token-file`, `-ca-file`, `-ca-path`, `-client-cert`, `-client-key`, `-tls-server-name`, with
`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_SSL`,
`CONSUL_HTTP_SSL_VERIFY`, `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`,
`CONSUL_CLIENT_KEY` and `CONSUL_TLS_SERVER_NAME` underneath), and the output and error texts are
those of Consul's commands.
Two small departures, both for operators: `-format=json` is accepted by every command that prints
data (Consul has it only on the peering commands), and `peering list`/`peering read` add the
server's error to their one-line failure message (Consul prints only "Error listing peerings").

Exit codes: 0 success, 1 any error (message on stderr), 2 `members` with no member matching.
Imports stay light (stdlib only): a client command must start fast.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

COMMANDS = ("peering", "operator", "members", "tls")
SUMMARIES = {
    "peering": "create and manage peering connections (generate-token, establish, read, "
               "list, delete)",
    "operator": "cluster operator commands (raft list-peers, raft remove-peer)",
    "members": "list the servers of the cluster",
    "tls": "a CA and certificates for the HTTPS API (ca create, cert create)",
}
FORMATS = ("json", "pretty")
_SERF_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


class CommandError(Exception):
    """Print the message on stderr and exit with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Help(Exception):
    pass


# ---- Go's flag package, as much of it as Consul's commands use ----


class FlagSet:
    def __init__(self, usage: str) -> None:
        self.usage = usage.strip("\n")
        self._kinds: dict[str, str] = {}
        self._help: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def string(self, name: str, default: str, help: str) -> None:
        self._kinds[name], self._help[name], self.values[name] = "string", help, default

    def boolean(self, name: str, help: str) -> None:
        self._kinds[name], self._help[name], self.values[name] = "bool", help, False

    def mapping(self, name: str, help: str) -> None:
        self._kinds[name], self._help[name], self.values[name] = "map", help, {}

    def strings(self, name: str, help: str) -> None:
        """A flag that may be given several times; its values in order."""
        self._kinds[name], self._help[name], self.values[name] = "list", help, []

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def help_text(self) -> str:
        lines = [f"Usage: {self.usage}", ""]
        for name in sorted(self._kinds):
            arg = "" if self._kinds[name] == "bool" else " <value>"
            lines += [f"  -{name}{arg}", f"     {self._help[name]}", ""]
        return "\n".join(lines).rstrip() + "\n"

    def fail(self, message: str) -> CommandError:
        return CommandError(f"{message}\n\n{self.help_text()}".rstrip("\n"))

    def parse(self, args: list[str]) -> list[str]:
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                return args[i + 1:]
            if len(arg) < 2 or arg[0] != "-":
                return args[i:]
            name = arg[2:] if arg.startswith("--") else arg[1:]
            if not name or name[0] in "-=":
                raise self.fail(f"bad flag syntax: {arg}")
            name, has_value, value = name.partition("=")
            if name in ("h", "help") and name not in self._kinds:
                raise _Help(self.help_text())
            kind = self._kinds.get(name)
            if kind is None:
                raise self.fail(f"flag provided but not defined: -{name}")
            i += 1
            if kind == "bool":
                if has_value:
                    if value.lower() not in ("1", "0", "t", "f", "true", "false"):
                        raise self.fail(
                            f'invalid boolean value "{value}" for -{name}: parse error')
                    self.values[name] = value.lower() in ("1", "t", "true")
                else:
                    self.values[name] = True
                continue
            if not has_value:
                if i >= len(args):
                    raise self.fail(f"flag needs an argument: -{name}")
                value = args[i]
                i += 1
            if kind == "map":
                key, eq, val = value.partition("=")
                if not eq:
                    raise self.fail(f'invalid value "{value}" for flag -{name}: '
                                    f'missing "=" value in argument: {value}')
                self.values[name][key] = val
            elif kind == "list":
                self.values[name].append(value)
            else:
                self.values[name] = value
        return []


_TLS_FLAGS = (
    ("ca-file", "CONSUL_CACERT", "Path to a CA file to use for TLS when communicating with "
     "Consul."),
    ("ca-path", "CONSUL_CAPATH", "Path to a directory of CA certificates to use for TLS when "
     "communicating with Consul."),
    ("client-cert", "CONSUL_CLIENT_CERT", "Path to a client cert file to use for TLS when "
     "'verify_incoming' is enabled."),
    ("client-key", "CONSUL_CLIENT_KEY", "Path to a client key file to use for TLS when "
     "'verify_incoming' is enabled."),
    ("tls-server-name", "CONSUL_TLS_SERVER_NAME", "The server name to use as the SNI host when "
     "connecting via TLS."),
)


def _http_flags(fs: FlagSet, partition: bool = True, stale: bool = False) -> None:
    fs.string("http-addr", "", "The `address` and port of the Consul HTTP agent. The value can "
              "be an IP address or DNS address, but it must also include the port. This can "
              "also be specified via the CONSUL_HTTP_ADDR environment variable. The default "
              "value is http://127.0.0.1:8500.")
    fs.string("token", "", "ACL token to use in the request. This can also be specified via "
              "the CONSUL_HTTP_TOKEN environment variable.")
    fs.string("token-file", "", "File containing the ACL token to use in the request. This "
              "can also be specified via the CONSUL_HTTP_TOKEN_FILE environment variable.")
    for name, env, what in _TLS_FLAGS:
        fs.string(name, "", f"{what} This can also be specified via the {env} environment "
                  "variable.")
    if partition:
        fs.string("partition", "", "Specifies the admin partition to query.")
    if stale:
        fs.boolean("stale", "Permit any Consul server (non-leader) to respond to this request.")


def _format_flag(fs: FlagSet) -> None:
    fs.string("format", "pretty", "Output format {json|pretty} (default: pretty)")


def _check_format(fs: FlagSet) -> None:
    if fs["format"] not in FORMATS:
        raise CommandError("Invalid format, valid formats are {json|pretty}")


# ---- the HTTP client (Consul's api package: errors read the same) ----


class Client:
    def __init__(self, fs: FlagSet) -> None:
        addr = fs["http-addr"] or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
        if "://" not in addr:
            ssl = os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "t", "true")
            addr = ("https://" if ssl else "http://") + addr
        self.base = addr.rstrip("/")
        token = fs["token"]
        if not token and fs["token-file"]:
            token = _read_token(fs["token-file"])
        if not token:
            token = os.environ.get("CONSUL_HTTP_TOKEN", "")
        if not token and os.environ.get("CONSUL_HTTP_TOKEN_FILE"):
            token = _read_token(os.environ["CONSUL_HTTP_TOKEN_FILE"])
        self.token = token
        self.partition = fs.values.get("partition", "")
        tls = {name: fs[name] or os.environ.get(env, "") for name, env, _ in _TLS_FLAGS}
        self.opener = urllib.request.build_opener(
            _HTTPSHandler(_tls_context(tls), tls["tls-server-name"] or None)
        ) if self.base.startswith("https://") else urllib.request.build_opener()
        # A server that requires client certificates (verify_incoming) closes the connection
        # without a word (asyncio sends no TLS alert): say what is likely missing.
        self.cert_hint = self.base.startswith("https://") and not tls["client-cert"]

    def request(self, method: str, path: str, query: dict[str, str] | None = None,
                body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        """The decoded JSON answer (None for an empty body); CommandError-ready text on
        failure: `Unexpected response code: 400 (<server's text>)` or the transport error."""
        q = dict(query or {})
        if self.partition:
            q["partition"] = self.partition
        url = self.base + urllib.parse.quote(path, safe="/")
        if q:
            url += "?" + "&".join(
                k if v == "" else f"{k}={urllib.parse.quote(v, safe='')}" for k, v in q.items())
        req = urllib.request.Request(url, method=method)
        if body is not None:
            req.data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("X-Consul-Token", self.token)
        try:
            with self.opener.open(req, timeout=60) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            text = _transport_text(e, url)
            if self.cert_hint and isinstance(getattr(e, "reason", e), ConnectionError |
                                             ssl.SSLEOFError):
                text = "the server closed the TLS connection without an answer; it may " \
                       "require a client certificate (-client-cert/-client-key, " \
                       "CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY)"
            raise _TransportError(f'{method.title()} "{url}": {text}') from None
        if status not in ok:
            raise _StatusError(status, payload.decode(errors="replace"))
        return json.loads(payload) if payload.strip() else None


def _tls_context(tls: dict[str, str]) -> ssl.SSLContext:
    """Consul's TLS client settings: the CA file/path (else the system's roots), a client
    certificate for verify_incoming, and CONSUL_HTTP_SSL_VERIFY=false to skip verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls["ca-file"] or tls["ca-path"]:
            ctx.load_verify_locations(cafile=tls["ca-file"] or None,
                                      capath=tls["ca-path"] or None)
        else:
            ctx.load_default_certs()
        if tls["client-cert"] or tls["client-key"]:
            ctx.load_cert_chain(tls["client-cert"], tls["client-key"] or None)
    except (OSError, ssl.SSLError) as e:
        raise CommandError(f"Error loading TLS files: {e}") from None
    verify = os.environ.get("CONSUL_HTTP_SSL_VERIFY", "").lower()
    if verify in ("0", "f", "false"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """HTTPS with our context and, when given, another name to verify and send as SNI."""

    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(context=context)
        self._ctx, self._name = context, server_name

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        ctx, name = self._ctx, self._name

        class Conn(http.client.HTTPSConnection):
            def connect(self) -> None:
                http.client.HTTPConnection.connect(self)
                self.sock = ctx.wrap_socket(self.sock, server_hostname=name or self.host)

        return self.do_open(Conn, req)


class _TransportError(Exception):
    pass


class _StatusError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"Unexpected response code: {status} ({body})")
        self.status = status
        self.body = body


def _read_token(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise CommandError(f"Error loading token file: {e}") from None


def _transport_text(e: BaseException, url: str) -> str:
    reason = getattr(e, "reason", e)
    netloc = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, ConnectionRefusedError) or getattr(reason, "errno", None) == \
            errno.ECONNREFUSED:
        return f"dial tcp {netloc}: connect: connection refused"
    if isinstance(reason, socket.gaierror):
        return f"dial tcp: lookup {netloc}: no such host"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(reason, ssl.SSLCertVerificationError):
        if reason.verify_code in (2, 19, 20, 21):  # no path to a trusted root
            return "tls: failed to verify certificate: x509: certificate signed by unknown " \
                   "authority"
        return f"tls: failed to verify certificate: {reason.verify_message}"
    if isinstance(reason, ssl.SSLError):
        text = str(reason).lower()
        if "certificate required" in text:
            return "remote error: tls: certificate required"
        if "wrong version number" in text or "record layer failure" in text:
            return "http: server gave HTTP response to HTTPS client"
        return f"tls: {reason.reason or reason}"
    return str(reason)


# ---- output ----


def columnize(rows: list[list[Any]]) -> str:
    """ryanuber/columnize as Consul uses it: columns padded, glued by two spaces."""
    cells = [[str(c) for c in row] for row in rows]
    widths: list[int] = []
    for row in cells:
        for i, c in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(c))
    return "\n".join(
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells
    )


def _out(text: str) -> None:
    print(text, flush=True)


def _json(value: Any) -> None:
    _out(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


# ---- peering ----

_PEERING_HELP = """Usage: peerplane peering <subcommand> [options] [args]

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
    fs = FlagSet("peerplane peering generate-token [options] -name <peer name>")
    fs.string("name", "", "(Required) The local name assigned to the peer cluster.")
    fs.mapping("meta", "Metadata to associate with the peering, formatted as key=value. This "
               "flag may be specified multiple times to set multiple metadata fields.")
    fs.string("server-external-addresses", "", "A list of addresses to put into the generated "
              "token, formatted as a comma-separate list. Addresses are the form of "
              "<host or IP>:port.")
    _format_flag(fs)
    _http_flags(fs)
    fs.parse(args)
    if not fs["name"]:
        raise CommandError("Missing the required -name flag")
    _check_format(fs)
    client = Client(fs)
    body: dict[str, Any] = {"PeerName": fs["name"]}
    if fs["meta"]:
        body["Meta"] = fs["meta"]
    if client.partition:
        body["Partition"] = client.partition
    if fs["server-external-addresses"]:
        body["ServerExternalAddresses"] = fs["server-external-addresses"].split(",")
    try:
        res = client.request("POST", "/v1/peering/token", body=body)
    except (_StatusError, _TransportError) as e:
        raise CommandError(f"Error generating peering token for {fs['name']}: {e}") from None
    if fs["format"] == "json":
        _json(res)
    else:
        _out(res["PeeringToken"])
    return 0


def peering_establish(args: list[str]) -> int:
    fs = FlagSet("peerplane peering establish [options] -name <peer name> "
                 "-peering-token <token>")
    fs.string("name", "", "(Required) The local name assigned to the peer cluster.")
    fs.string("peering-token", "", "(Required) The peering token from the accepting cluster.")
    fs.mapping("meta", "Metadata to associate with the peering, formatted as key=value. This "
               "flag may be specified multiple times to set multiple meta fields.")
    _http_flags(fs)
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
    except (_StatusError, _TransportError) as e:
        raise CommandError(f"Error establishing peering for {fs['name']}: {e}") from None
    _out(f"Successfully established peering connection with {fs['name']}")
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


def _named_read(usage: str, args: list[str]) -> tuple[FlagSet, Client]:
    """The flags of a read about one peer (-name, -format, the HTTP flags), parsed."""
    fs = FlagSet(usage)
    fs.string("name", "", "(Required) The local name assigned to the peer cluster.")
    _format_flag(fs)
    _http_flags(fs)
    fs.parse(args)
    if not fs["name"]:
        raise CommandError("Missing the required -name flag")
    _check_format(fs)
    return fs, Client(fs)


def _get_or_none(client: Client, path: str, what: str) -> Any:
    """The JSON answer, None for a 404; other failures are `Error reading <what>: ...`."""
    try:
        return client.request("GET", path)
    except _StatusError as e:
        if e.status != 404:
            raise CommandError(f"Error reading {what}: {e}") from None
        return None
    except _TransportError as e:
        raise CommandError(f"Error reading {what}: {e}") from None


def peering_read(args: list[str]) -> int:
    fs, client = _named_read("peerplane peering read [options] -name <peer name>", args)
    res = _get_or_none(client, f"/v1/peering/{fs['name']}", "peering")
    if res is None:
        raise CommandError(f"No peering with name {fs['name']} found.")
    if fs["format"] == "json":
        _json(res)
    else:
        _out(format_peering(res))
    return 0


def peering_list(args: list[str]) -> int:
    fs = FlagSet("peerplane peering list [options]")
    _format_flag(fs)
    _http_flags(fs)
    fs.parse(args)
    _check_format(fs)
    client = Client(fs)
    try:
        res = client.request("GET", "/v1/peerings") or []
    except (_StatusError, _TransportError) as e:
        raise CommandError(f"Error listing peerings: {e}") from None
    res.sort(key=lambda p: p.get("Name", ""))
    if fs["format"] == "json":
        _json(res)
        return 0
    if not res:
        _out("There are no peering connections.")
        return 0
    rows: list[list[Any]] = [["Name", "State", "Imported Svcs", "Exported Svcs", "Meta"]]
    for p in res:
        ss = p.get("StreamStatus") or {}
        meta = ",".join(f"{k}={v}" for k, v in sorted((p.get("Meta") or {}).items()))
        rows.append([p["Name"], p["State"], len(ss.get("ImportedServices") or []),
                     len(ss.get("ExportedServices") or []), meta])
    _out(columnize(rows))
    return 0


def peering_delete(args: list[str]) -> int:
    fs = FlagSet("peerplane peering delete [options] -name <peer name>")
    fs.string("name", "", "(Required) The local name assigned to the peer cluster.")
    _http_flags(fs)
    fs.parse(args)
    if not fs["name"]:
        raise CommandError("Missing the required -name flag")
    client = Client(fs)
    try:
        client.request("DELETE", f"/v1/peering/{fs['name']}")
    except (_StatusError, _TransportError) as e:
        raise CommandError(f"Error deleting peering for {fs['name']}: {e}") from None
    _out(f"Successfully submitted peering connection, {fs['name']}, for deletion")
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
        _json(names)
    elif not names:
        _out(f"No services are exported to {fs['name']}.")
    else:
        _out("\n".join(names))
    return 0


# ---- operator raft list-peers ----


def list_peers_rows(config: dict[str, Any], health: dict[str, Any]) -> list[dict[str, Any]]:
    by_id = {s["ID"]: s for s in health.get("Servers") or []}
    leader_index = next((by_id[s["ID"]]["LastIndex"] for s in config["Servers"]
                         if s.get("Leader") and s["ID"] in by_id), 0)
    rows = []
    for s in config["Servers"]:
        h = by_id.get(s["ID"])
        row = {
            "Node": s["Node"], "ID": s["ID"], "Address": s["Address"],
            "State": "leader" if s.get("Leader") else "follower", "Voter": bool(s.get("Voter")),
            "RaftProtocol": s.get("ProtocolVersion") or "<=1",
            "CommitIndex": h["LastIndex"] if h else None, "TrailsLeaderBy": None,
        }
        if h and not s.get("Leader"):
            row["TrailsLeaderBy"] = max(0, leader_index - h["LastIndex"])
        rows.append(row)
    return rows


def operator_raft_list_peers(args: list[str]) -> int:
    fs = FlagSet("peerplane operator raft list-peers [options]")
    _http_flags(fs, partition=False, stale=True)
    _format_flag(fs)
    fs.parse(args)
    _check_format(fs)
    client = Client(fs)
    query = {"stale": ""} if fs["stale"] else {}
    try:
        try:
            config = client.request("GET", "/v1/operator/raft/configuration", query)
        except (_StatusError, _TransportError) as e:
            raise CommandError(f"Failed to retrieve raft configuration: {e}") from None
        try:
            health = client.request("GET", "/v1/operator/autopilot/health", query,
                                    ok=(200, 429))
        except (_StatusError, _TransportError) as e:
            raise CommandError(f"Failed to retrieve autopilot health: {e}") from None
    except CommandError as e:
        raise CommandError(f"Error getting peers: {e}") from None
    rows = list_peers_rows(config, health)
    if fs["format"] == "json":
        _json(rows)
        return 0
    table: list[list[Any]] = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol",
                               "Commit Index", "Trails Leader By"]]
    for r in rows:
        if r["CommitIndex"] is None:
            trails = "_"
        elif r["State"] == "leader":
            trails = "_"
        else:
            n = r["TrailsLeaderBy"]
            trails = f"{n} Commit" if n <= 1 else f"{n} Commits"
        table.append([r["Node"], r["ID"], r["Address"], r["State"], str(r["Voter"]).lower(),
                      r["RaftProtocol"], "_" if r["CommitIndex"] is None else r["CommitIndex"],
                      trails])
    _out(columnize(table))
    return 0


# ---- operator raft remove-peer ----


def operator_raft_remove_peer(args: list[str]) -> int:
    fs = FlagSet("peerplane operator raft remove-peer [options]")
    fs.string("address", "", "The address to remove from the Raft configuration.")
    fs.string("id", "", "The ID to remove from the Raft configuration.")
    _http_flags(fs, partition=False)
    fs.parse(args)
    address, server_id = fs["address"], fs["id"]
    if not address and not server_id:
        raise CommandError("Error removing peer: an address or id is required for the peer "
                           "to remove")
    if address and server_id:
        raise CommandError("Error removing peer: cannot give both an address and id")
    query = {"address": address} if address else {"id": server_id}
    try:
        Client(fs).request("DELETE", "/v1/operator/raft/peer", query)
    except (_StatusError, _TransportError) as e:
        raise CommandError(f"Error removing peer: {e}") from None
    which = f'address "{address}"' if address else f'id "{server_id}"'
    _out(f"Removed peer with {which}")
    return 0


# ---- members ----


def members(args: list[str]) -> int:
    fs = FlagSet("peerplane members [options]")
    fs.boolean("detailed", "Provides detailed information about nodes.")
    fs.string("status", ".*", "If provided, output is filtered to only nodes matching the "
              "regular expression for status.")
    _format_flag(fs)
    _http_flags(fs)
    fs.parse(args)
    _check_format(fs)
    try:
        status_re = re.compile(fs["status"])
    except re.error as e:
        raise CommandError(f"Failed to compile status regexp: {e}") from None
    client = Client(fs)
    try:
        found = client.request("GET", "/v1/agent/members") or []
    except (_StatusError, _TransportError) as e:
        raise CommandError(f"Error retrieving members: {e}") from None
    found = [m for m in found if status_re.search(_SERF_STATUS.get(m.get("Status"), "unknown"))]
    if not found:
        return 2
    found.sort(key=lambda m: m.get("Name", ""))
    if fs["format"] == "json":
        _json(found)
        return 0
    if fs["detailed"]:
        rows: list[list[Any]] = [["Node", "Address", "Status", "Tags"]]
        for m in found:
            tags = ",".join(f"{k}={v}" for k, v in sorted((m.get("Tags") or {}).items()))
            rows.append([m["Name"], f"{m['Addr']}:{m['Port']}",
                         _SERF_STATUS.get(m.get("Status"), "unknown"), tags])
    else:
        rows = [["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition",
                 "Segment"]]
        for m in found:
            tags = m.get("Tags") or {}
            role = "server" if tags.get("role") == "consul" else tags.get("role", "unknown")
            build = (tags.get("build") or "< 0.3").split(":")[0]
            rows.append([m["Name"], f"{m['Addr']}:{m['Port']}",
                         _SERF_STATUS.get(m.get("Status"), "unknown"), role, build,
                         tags.get("vsn", ""), tags.get("dc", ""), "default", "<all>"])
    _out(columnize(rows))
    return 0


# ---- dispatch ----

_TREE: dict[str, Any] = {
    "peering": {
        "generate-token": peering_generate_token,
        "establish": peering_establish,
        "read": peering_read,
        "list": peering_list,
        "delete": peering_delete,
        "exported-services": peering_exported_services,
    },
    "operator": {"raft": {"list-peers": operator_raft_list_peers,
                          "remove-peer": operator_raft_remove_peer}},
    "members": members,
    "tls": {"ca": {"create": lambda args: _tls().ca_create(args)},
            "cert": {"create": lambda args: _tls().cert_create(args)}},
}


def _tls() -> Any:
    from . import tls  # cryptography: loaded only for the tls commands

    return tls


def _subcommand_help(path: list[str], node: dict[str, Any]) -> str:
    if path == ["peering"]:
        return _PEERING_HELP
    cmds = "\n".join(f"    {name}" for name in sorted(node))
    return f"Usage: peerplane {' '.join(path)} <subcommand> [options]\n\nSubcommands:\n{cmds}\n"


def run(argv: list[str]) -> int:
    """Run one client command (argv[0] in COMMANDS); returns the exit code."""
    node: Any = _TREE
    path: list[str] = []
    rest = list(argv)
    while isinstance(node, dict):
        if not rest or rest[0] not in node:
            if path and (not rest or rest[0] in ("-h", "-help", "--help")):
                print(_subcommand_help(path, node), file=sys.stderr, end="")
                return 0 if rest else 1
            shown = " ".join(path)
            print(f"peerplane {shown}: unknown subcommand {rest[0]!r}\n", file=sys.stderr)
            print(_subcommand_help(path, node), file=sys.stderr, end="")
            return 1
        path.append(rest.pop(0))
        node = node[path[-1]]
    command: Callable[[list[str]], int] = node
    try:
        return command(rest)
    except _Help as h:
        print(str(h), file=sys.stderr, end="")
        return 0
    except CommandError as e:
        print(str(e), file=sys.stderr)
        return e.code
