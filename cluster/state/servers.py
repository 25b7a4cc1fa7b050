"""The servers table (who is in the cluster and where its HTTP and peering listeners are) and
the cluster's identity (trust domain and CA, created once by the first leader)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..commands import Barrier, InitIdentity, RegisterServer
from .base import Result, Table


class Servers(Table):
    name = "servers"

    def reset(self) -> None:
        # raft address "host:port" -> {"Node", "HTTPAddr", "PeeringAddr", "Datacenter",
        # "HTTPSAddr"}; PeeringAddr is what peer clusters dial (advertise_addr_wan when set)
        self.servers: dict[str, dict[str, str]] = {}
        # {"TrustDomain", "CACert", "CAKey"} once the first leader initialised the cluster
        self.identity: dict[str, str] | None = None

    def handlers(self) -> dict[type, Callable[[Any], Result]]:
        return {
            RegisterServer: self._register_server,
            InitIdentity: self._init_identity,
            Barrier: lambda cmd: self.unchanged(),
        }

    def _register_server(self, cmd: RegisterServer) -> Result:
        entry = {"Node": cmd.Node, "HTTPAddr": cmd.HTTPAddr, "PeeringAddr": cmd.PeeringAddr,
                 "Datacenter": cmd.Datacenter, "HTTPSAddr": cmd.HTTPSAddr}
        if self.servers.get(cmd.RaftAddr) == entry:
            return self.unchanged()
        self.servers[cmd.RaftAddr] = entry
        self.touch(cmd.RaftAddr)
        return {"index": self.bump(), "changed": True}

    def _init_identity(self, cmd: InitIdentity) -> Result:
        if self.identity is not None:
            return self.unchanged()  # the first initialisation wins
        self.identity = {"TrustDomain": cmd.TrustDomain, "CACert": cmd.CACert,
                         "CAKey": cmd.CAKey}
        self.changes.touched.add(("identity", None))
        return {"index": self.bump(), "changed": True}

    def snapshot(self) -> dict[str, Any]:
        return {"servers": self.servers, "identity": self.identity}

    def restore(self, data: dict[str, Any]) -> None:
        self.servers = data["servers"]
        self.identity = data["identity"]
