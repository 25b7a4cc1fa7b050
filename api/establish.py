"""The dialer's half of establish: trade the token's establishment secret for a stream secret.

Status codes: a used, superseded or unknown establishment secret is Consul's 403
`a new peering token must be generated: invalid peering establishment secret`. An acceptor that
no server answered within the ~3 s window (unreachable, TLS verification against the token's
CA and ServerName failed, no leader there) is **502** with Consul's text
`failed to exchange peering secret through address "<addr>": <cause>` (one per address, `; `
joined) - Consul sends 500, which our design reserves for bugs, and 503 means *this* cluster
has no leader. Either way the reason is also kept in the peering's StreamStatus.LastError.
"""

from __future__ import annotations

from cluster.peering.client import ExchangeDenied, ExchangeFailed
from cluster.peering.token import PeeringToken

from .context import ServerContext
from .errors import APIError

ESTABLISHMENT_DENIED = (
    "a new peering token must be generated: invalid peering establishment secret"
)


async def exchange_secret(ctx: ServerContext, peering_id: str, token: PeeringToken) -> str:
    service = ctx.peering
    if service is None:
        raise APIError(503, "peering streams are not running on this server")
    addresses = token.ManualServerAddresses or token.ServerAddresses or []
    try:
        return await service.exchange(
            addresses, token.ServerName, token.CA or [], token.PeerID, token.EstablishmentSecret
        )
    except ExchangeDenied:
        service.note_error(peering_id, ESTABLISHMENT_DENIED)
        raise APIError(403, ESTABLISHMENT_DENIED) from None
    except ExchangeFailed as e:
        service.note_error(peering_id, str(e))
        raise APIError(502, str(e)) from None
