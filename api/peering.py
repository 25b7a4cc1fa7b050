"""The five peering endpoints: thin handlers (parse; serve: commit and render) and their rows of
the route table (api/pipeline.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from cluster import gotime
from cluster.commands import Delete, Establish, GenerateToken, PeeringEvent
from cluster.fsm import Record
from cluster.gojson import go_quote
from cluster.ids import new_uuid
from cluster.peering.identity import server_name
from cluster.peering.status import empty_status
from cluster.peering.token import PeeringToken, TokenError, decode_token
from cluster.state.transitions import SECRET_EXCHANGED

from .authz import PEERING_READ, PEERING_WRITE, UNLISTED
from .commit import commit
from .context import SERVER, ServerContext
from .errors import APIError, bad_request
from .establish import exchange_secret
from .pipeline import LEADER, LOCAL, READ, WRITE, Route
from .reads import read_headers
from .render import json_response
from .validate import (
    ESTABLISH_REQUEST,
    TOKEN_REQUEST,
    check_meta,
    check_peer_name,
    decode_body,
    partition_of,
)


def peering_json(rec: Record, stream: dict[str, Any] | None) -> dict[str, Any]:
    """The API object in Consul 1.16's field order; empty optional fields omitted."""
    out: dict[str, Any] = {"ID": rec["ID"], "Name": rec["Name"], "Partition": rec["Partition"]}
    if rec.get("DeletedAt"):
        out["DeletedAt"] = rec["DeletedAt"]
    if rec.get("Meta"):
        out["Meta"] = dict(sorted(rec["Meta"].items()))  # Go writes map keys sorted
    out["State"] = rec["State"]
    for key in ("PeerID", "PeerCAPems", "PeerServerName", "PeerServerAddresses"):
        if rec.get(key):
            out[key] = rec[key]
    out["StreamStatus"] = dict(stream) if stream else empty_status()
    out["CreateIndex"] = rec["CreateIndex"]
    out["ModifyIndex"] = rec["ModifyIndex"]
    remote = rec.get("Remote") or {}
    out["Remote"] = {"Partition": remote.get("Partition", ""),
                     "Datacenter": remote.get("Datacenter", "")}
    return out


async def _identity(ctx: ServerContext) -> dict[str, str]:
    """The cluster CA; a brand-new leader may still be creating it, so wait a little."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.hold_timeout
    while (identity := ctx.fsm.identity) is None:
        if loop.time() >= deadline:
            raise APIError(503, "CA has not finished initializing")
        await asyncio.sleep(0.02)
    return identity


def _partition(request: web.Request, body: dict[str, Any] | None = None) -> str:
    return partition_of(
        request.query.get("partition"),
        request.headers.get("X-Consul-Partition"),
        (body or {}).get("Partition", ""),
    )


async def parse_token_request(request: web.Request) -> tuple[dict[str, Any], str]:
    body = decode_body(await request.read(), TOKEN_REQUEST, "api.PeeringGenerateTokenRequest")
    name = body.get("PeerName", "")
    if not name:
        raise bad_request(
            "PeerName is required in the payload when generating a new peering token."
        )
    partition = _partition(request, body)
    check_peer_name(name)
    check_meta(body.get("Meta") or {})
    return body, partition


async def generate_token(
    request: web.Request, parsed: tuple[dict[str, Any], str]
) -> web.StreamResponse:
    ctx = request.app[SERVER]
    body, partition = parsed
    name = body["PeerName"]
    identity = await _identity(ctx)
    secret, new_id, rid = new_uuid(), new_uuid(), new_uuid()

    def build() -> GenerateToken:
        existing = ctx.fsm.get(partition, name)
        return GenerateToken(
            rid=rid, Partition=partition, Name=name, ID=new_id, Meta=body.get("Meta") or {},
            EstablishmentSecret=secret,
            expect_index=existing["ModifyIndex"] if existing else 0,
        )

    res = await commit(ctx, build)
    servers = ctx.fsm.servers_view().values()
    addresses = sorted(s["PeeringAddr"] for s in servers) or [ctx.peering_addr]
    token = PeeringToken(
        CA=[identity["CACert"]],
        ManualServerAddresses=body.get("ServerExternalAddresses") or None,
        ServerAddresses=addresses,
        ServerName=server_name(ctx.datacenter, identity["TrustDomain"]),
        PeerID=res["ID"],
        EstablishmentSecret=secret,
        Remote={"Partition": partition, "Datacenter": ctx.datacenter, "Locality": None},
    )
    return json_response(request, {"PeeringToken": token.encode()})


async def parse_establish_request(
    request: web.Request,
) -> tuple[dict[str, Any], str, PeeringToken]:
    body = decode_body(await request.read(), ESTABLISH_REQUEST, "api.PeeringEstablishRequest")
    name = body.get("PeerName", "")
    if not name:
        raise bad_request("PeerName is required in the payload when establishing a peering.")
    if not body.get("PeeringToken"):
        raise bad_request("PeeringToken is required in the payload when establishing a peering.")
    partition = _partition(request, body)
    check_peer_name(name)
    try:
        token = decode_token(body["PeeringToken"])
    except TokenError as e:
        raise bad_request(str(e)) from None
    check_meta(body.get("Meta") or {})
    return body, partition, token


async def establish(
    request: web.Request, parsed: tuple[dict[str, Any], str, PeeringToken]
) -> web.StreamResponse:
    ctx = request.app[SERVER]
    body, partition, token = parsed
    name = body["PeerName"]
    identity = ctx.fsm.identity
    if identity is not None:
        own = server_name(ctx.datacenter, identity["TrustDomain"])
        if token.ServerName == own:
            raise bad_request(
                f'cannot create a peering within the same cluster "{own}". Refer to the '
                "`exported-services` documentation if you want to export between partitions "
                "without peering"
            )
    new_id, rid = new_uuid(), new_uuid()

    def build() -> Establish:
        existing = ctx.fsm.get(partition, name)
        return Establish(
            rid=rid, Partition=partition, Name=name, ID=new_id, Meta=body.get("Meta") or {},
            PeerID=token.PeerID, PeerCAPems=token.CA or [], PeerServerName=token.ServerName,
            PeerServerAddresses=token.ServerAddresses or [],
            ManualServerAddresses=token.ManualServerAddresses or [],
            Remote={"Partition": token.Remote.get("Partition") or "",
                    "Datacenter": token.Remote.get("Datacenter") or ""},
            expect_index=existing["ModifyIndex"] if existing else 0,
        )

    res = await commit(ctx, build)
    # Trade the token's establishment secret with the acceptor, then keep the stream secret
    # and let the leader's reconciler dial (api/establish.py, cluster/peering/reconciler.py).
    stream_secret = await exchange_secret(ctx, res["ID"], token)
    await commit(ctx, lambda: PeeringEvent(
        ID=res["ID"], Event=SECRET_EXCHANGED, ActiveStreamSecret=stream_secret,
    ))
    return json_response(request, {})


async def parse_name(request: web.Request) -> tuple[str, str]:
    """(partition, name) of a peering named in the path."""
    name = request.match_info.get("name", "")
    if not name:
        raise bad_request("Must specify a name to fetch.")
    return _partition(request), name


async def parse_partition(request: web.Request) -> str:
    return _partition(request)


def _read_index(ctx: ServerContext, parsed: tuple[str, str]) -> int:
    """Consul's PeeringRead index: the peering's own ModifyIndex, so a blocking read wakes only
    when this peering changes; the table's index while it does not exist (creation, removal)."""
    rec = ctx.fsm.get(*parsed)
    return rec["ModifyIndex"] if rec is not None else ctx.fsm.peerings_index


async def read(request: web.Request, parsed: tuple[str, str]) -> web.StreamResponse:
    ctx = request.app[SERVER]
    partition, name = parsed
    rec = ctx.fsm.get(partition, name)
    if rec is None:
        raise APIError(404, f"Peering not found for {go_quote(name)}", read_headers(request, None))
    return json_response(
        request,
        peering_json(rec, ctx.streams.get(rec["ID"])),
        read_headers(request, rec["ModifyIndex"]),
    )


async def list_peerings(request: web.Request, partition: str) -> web.StreamResponse:
    ctx = request.app[SERVER]
    recs, index = ctx.fsm.list(partition)
    headers = read_headers(request, index)
    if "pretty" in request.query:
        body = [peering_json(r, ctx.streams.get(r["ID"])) for r in recs]
        return json_response(request, body, headers)
    data = ctx.peering_list.render(partition, recs, ctx.streams, peering_json)
    return web.Response(body=data, content_type="application/json", headers=headers)


async def delete(request: web.Request, parsed: tuple[str, str]) -> web.StreamResponse:
    ctx = request.app[SERVER]
    partition, name = parsed
    rid = new_uuid()

    def build() -> Delete:
        existing = ctx.fsm.get(partition, name)
        return Delete(
            rid=rid, Partition=partition, Name=name.lower(), DeletedAt=gotime.now(),
            expect_index=existing["ModifyIndex"] if existing else 0,
        )

    await commit(ctx, build)
    return web.Response(status=200)


async def _post_only(request: web.Request, _: None) -> web.StreamResponse:
    """Other methods on the POST-only paths. As in Go's ServeMux, the exact path wins over the
    `/v1/peering/` subtree: `GET /v1/peering/token` is a 405, not a read of a peering "token"."""
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


# Everything below /v1/peering/ is a name, slashes and newlines included (Consul trims the
# prefix; the 404 text quotes what is left).
_NAMED = (r"/v1/peering/", r"/v1/peering/{name:[\s\S]+}")
ROUTES = [
    Route("POST", "/v1/peering/token", WRITE, PEERING_WRITE, generate_token,
          parse_token_request),
    Route("*", "/v1/peering/token", LOCAL, UNLISTED, _post_only),
    # LEADER: the secret exchange's failure is kept in the leader's stream status (LastError).
    Route("POST", "/v1/peering/establish", LEADER, PEERING_WRITE, establish,
          parse_establish_request),
    Route("*", "/v1/peering/establish", LOCAL, UNLISTED, _post_only),
    *(row for path in _NAMED for row in (
        Route("GET", path, READ, PEERING_READ, read, parse_name, _read_index),
        Route("DELETE", path, WRITE, PEERING_WRITE, delete, parse_name),
    )),
    Route("GET", "/v1/peerings", READ, PEERING_READ, list_peerings, parse_partition,
          lambda ctx, _partition: ctx.fsm.peerings_index),
]
