"""The ACL tables: policies by ID (and name), tokens by AccessorID (and SecretID), the
bootstrap index. Records are built and validated by api/acl.py; rules are parsed by
cluster/acl.py, never here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..commands import (
    AclBootstrap,
    AclInit,
    AclPolicyDelete,
    AclPolicySet,
    AclTokenDelete,
    AclTokenSet,
    CommandError,
)
from .base import Record, Result, Table

# ACL records as commands carry them (api/acl.py builds them; cluster/acl.py has the rules).
GLOBAL_MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
ANONYMOUS_TOKEN_ID = "00000000-0000-0000-0000-000000000002"


def _acl_strings(value: Any, what: str, fields: tuple[str, ...]) -> Record:
    if not isinstance(value, dict):
        raise CommandError(f"invalid command: {what} is not a map")
    rec: Record = {}
    for key in fields:
        item = value.get(key, "")
        if not isinstance(item, str):
            raise CommandError(f"invalid command: {what}.{key} has the wrong type")
        rec[key] = item
    return rec


def _acl_policy(value: Any) -> Record:
    rec = _acl_strings(value, "Policy", ("ID", "Name", "Description", "Rules", "Hash"))
    dcs = value.get("Datacenters") or []
    if not isinstance(dcs, list) or not all(isinstance(d, str) for d in dcs):
        raise CommandError("invalid command: Policy.Datacenters has the wrong type")
    if not rec["ID"] or not rec["Name"]:
        raise CommandError("invalid command: a policy needs an ID and a Name")
    rec["Datacenters"] = list(dcs)
    return rec


def _acl_token(value: Any) -> Record:
    rec = _acl_strings(
        value, "Token", ("AccessorID", "SecretID", "Description", "CreateTime", "Hash")
    )
    local, links = value.get("Local", False), value.get("Policies") or []
    if not isinstance(local, bool):
        raise CommandError("invalid command: Token.Local has the wrong type")
    if not isinstance(links, list) or not all(
        isinstance(link, dict) and isinstance(link.get("ID"), str) for link in links
    ):
        raise CommandError("invalid command: Token.Policies has the wrong type")
    if not rec["AccessorID"] or not rec["SecretID"]:
        raise CommandError("invalid command: a token needs an AccessorID and a SecretID")
    ids = list(dict.fromkeys(link["ID"] for link in links))  # deduplicated, order kept
    rec.update(Local=local, Policies=[{"ID": i} for i in ids])
    return rec


class ACL(Table):
    name = "acl"

    def reset(self) -> None:
        self.policies: dict[str, Record] = {}
        self.policy_names: dict[str, str] = {}  # lowercased Name -> ID
        self.tokens: dict[str, Record] = {}  # AccessorID -> token (SecretID included)
        self.secret_ids: dict[str, str] = {}  # SecretID -> AccessorID
        self.bootstrap_index = 0  # index of the (last) bootstrap; 0 = never bootstrapped
        self.policies_index = 0
        self.tokens_index = 0

    def handlers(self) -> dict[type, Callable[[Any], Result]]:
        return {
            AclInit: self._init,
            AclBootstrap: self._bootstrap,
            AclPolicySet: self._policy_set,
            AclPolicyDelete: self._policy_delete,
            AclTokenSet: self._token_set,
            AclTokenDelete: self._token_delete,
        }

    # ---- commands ----

    def _cas(self, expect_index: int | None, existing: Record | None) -> None:
        if expect_index is not None and expect_index != (
            existing["ModifyIndex"] if existing else 0
        ):
            raise CommandError("ACL record changed since the request was prepared", "conflict")

    def _ids_free(self, tok: Record) -> bool:
        return tok["AccessorID"] != tok["SecretID"] and not any(
            i in self.tokens or i in self.secret_ids
            for i in (tok["AccessorID"], tok["SecretID"])
        )

    def _check_token_ids(self, tok: Record) -> None:
        """A new token's AccessorID and SecretID are used by no token, as either ID."""
        accessor, secret = tok["AccessorID"], tok["SecretID"]
        if accessor in self.tokens or accessor in self.secret_ids:
            raise CommandError("Invalid Token: AccessorID is already in use", "conflict")
        if secret in self.secret_ids or secret in self.tokens or secret == accessor:
            raise CommandError("Invalid Token: SecretID is already in use", "conflict")

    def _check_links(self, tok: Record, extra: Record | None = None) -> None:
        for link in tok["Policies"]:
            if link["ID"] not in self.policies and (extra is None or extra["ID"] != link["ID"]):
                raise CommandError(f'No such ACL policy with ID "{link["ID"]}"')

    def _put_policy(self, rec: Record, index: int) -> None:
        existing = self.policies.get(rec["ID"])
        rec = dict(rec, CreateIndex=existing["CreateIndex"] if existing else index,
                   ModifyIndex=index)
        if existing is not None:
            self.policy_names.pop(existing["Name"].lower(), None)
        self.policies[rec["ID"]] = rec
        self.changes.touched.add(("acl_policies", rec["ID"]))
        self.policy_names[rec["Name"].lower()] = rec["ID"]
        self.policies_index = index

    def _put_token(self, tok: Record, index: int) -> None:
        existing = self.tokens.get(tok["AccessorID"])
        tok = dict(tok, ModifyIndex=index)
        tok["CreateIndex"] = existing["CreateIndex"] if existing else index
        if existing is not None:
            tok["CreateTime"] = existing["CreateTime"]
            self.secret_ids.pop(existing["SecretID"], None)
        self.tokens[tok["AccessorID"]] = tok
        self.changes.touched.add(("acl_tokens", tok["AccessorID"]))
        self.secret_ids[tok["SecretID"]] = tok["AccessorID"]
        self.tokens_index = index

    def _init(self, cmd: AclInit) -> Result:
        """The leader's ACL initialisation: the built-in global-management policy, the anonymous
        token and the initial management token (from the agent's configuration), each only
        when missing. Creating the initial management token uses up the bootstrap, as in
        Consul."""
        policy = _acl_policy(cmd.Policy)
        anonymous = _acl_token(cmd.Anonymous)
        management = _acl_token(cmd.Management) if cmd.Management else None
        add_policy = (policy["ID"] not in self.policies
                      and policy["Name"].lower() not in self.policy_names)
        add_anonymous = self._ids_free(anonymous)
        add_management = management is not None and self._ids_free(management)
        if add_anonymous and add_management:
            assert management is not None
            add_management = not {management["AccessorID"], management["SecretID"]} & {
                anonymous["AccessorID"], anonymous["SecretID"]}
        if not (add_policy or add_anonymous or add_management):
            return self.unchanged()
        index = self.bump()
        if add_policy:
            self._put_policy(policy, index)
        if add_anonymous:
            self._put_token(anonymous, index)
        if add_management:
            assert management is not None
            self._put_token(management, index)
            if not self.bootstrap_index:
                self.bootstrap_index = index
        return {"index": index, "changed": True}

    def _bootstrap(self, cmd: AclBootstrap) -> Result:
        """Consul's ACLBootstrap: allowed once (again only with the current reset index), so of
        any number of racing bootstrap calls exactly one is applied."""
        tok = _acl_token(cmd.Token)
        policy = _acl_policy(cmd.Policy) if cmd.Policy else None
        reset = cmd.ResetIndex
        if self.bootstrap_index:
            if not reset:
                raise CommandError(
                    f"ACL bootstrap no longer allowed (reset index: {self.bootstrap_index})",
                    "bootstrap",
                )
            if reset != self.bootstrap_index:
                raise CommandError(
                    f"Invalid bootstrap reset index (specified {reset}, "
                    f"reset index: {self.bootstrap_index})",
                    "bootstrap",
                )
        self._check_token_ids(tok)
        add_policy = policy is not None and policy["ID"] not in self.policies
        self._check_links(tok, policy if add_policy else None)
        index = self.bump()
        if add_policy:
            assert policy is not None
            self._put_policy(policy, index)
        self._put_token(tok, index)
        self.bootstrap_index = index
        return {"index": index, "changed": True, "AccessorID": tok["AccessorID"]}

    def _policy_set(self, cmd: AclPolicySet) -> Result:
        rec = _acl_policy(cmd.Policy)
        existing = self.policies.get(rec["ID"])
        owner = self.policy_names.get(rec["Name"].lower())
        if cmd.create:
            if existing is not None:
                raise CommandError("Invalid Policy: ID is already in use", "conflict")
            if owner is not None:
                raise CommandError(
                    f'Invalid Policy: A Policy with Name "{rec["Name"]}" already exists',
                    "conflict",
                )
        else:
            if existing is None:
                raise CommandError(f"cannot find policy {rec['ID']}", "not_found")
            self._cas(cmd.expect_index, existing)
            if owner is not None and owner != rec["ID"]:
                raise CommandError(
                    f'Invalid Policy: A policy with name "{rec["Name"]}" already exists',
                    "conflict",
                )
            if rec["ID"] == GLOBAL_MANAGEMENT_POLICY_ID:
                if rec["Datacenters"]:
                    raise CommandError("Changing the Datacenters of the builtin "
                                       "global-management policy is not permitted")
                if rec["Rules"] != existing["Rules"]:
                    raise CommandError("Changing the Rules for the builtin global-management "
                                       "policy is not permitted")
        index = self.bump()
        self._put_policy(rec, index)
        return {"index": index, "changed": True, "ID": rec["ID"]}

    def _policy_delete(self, cmd: AclPolicyDelete) -> Result:
        existing = self.policies.get(cmd.ID)
        if existing is None:
            return self.unchanged()
        if existing["ID"] == GLOBAL_MANAGEMENT_POLICY_ID:
            raise CommandError(
                "Delete operation not permitted on the builtin global-management policy"
            )
        index = self.bump()
        del self.policies[existing["ID"]]
        self.changes.touched.add(("acl_policies", existing["ID"]))
        self.policy_names.pop(existing["Name"].lower(), None)
        self.policies_index = index
        return {"index": index, "changed": True}

    def _token_set(self, cmd: AclTokenSet) -> Result:
        tok = _acl_token(cmd.Token)
        existing = self.tokens.get(tok["AccessorID"])
        if cmd.create:
            self._check_token_ids(tok)
        else:
            if existing is None:
                raise CommandError(f'Cannot find token "{tok["AccessorID"]}"', "not_found")
            self._cas(cmd.expect_index, existing)
            if tok["SecretID"] != existing["SecretID"]:
                raise CommandError("Changing a tokens SecretID is not permitted")
            if tok["Local"] != existing["Local"]:
                raise CommandError(f"cannot toggle local mode of {tok['AccessorID']}")
        self._check_links(tok)
        index = self.bump()
        self._put_token(tok, index)
        return {"index": index, "changed": True, "AccessorID": tok["AccessorID"]}

    def _token_delete(self, cmd: AclTokenDelete) -> Result:
        accessor = cmd.AccessorID
        if accessor == ANONYMOUS_TOKEN_ID:
            raise CommandError("Delete operation not permitted on the anonymous token")
        existing = self.tokens.get(accessor)
        if existing is None:
            return self.unchanged()
        index = self.bump()
        del self.tokens[accessor]
        self.changes.touched.add(("acl_tokens", accessor))
        self.secret_ids.pop(existing["SecretID"], None)
        self.tokens_index = index
        return {"index": index, "changed": True}

    # ---- reads ----

    @property
    def revision(self) -> int:
        """The index of the last change to any ACL record: what an ACL decision depends on."""
        return max(self.policies_index, self.tokens_index, self.bootstrap_index)

    def policy_list(self) -> tuple[list[Record], int]:
        """Policies sorted by ID (Consul's memdb order) and the policies table index."""
        return sorted(self.policies.values(), key=lambda r: r["ID"]), self.policies_index

    def token_list(self) -> tuple[list[Record], int]:
        """Tokens sorted by AccessorID and the tokens table index."""
        return sorted(self.tokens.values(), key=lambda r: r["AccessorID"]), self.tokens_index

    # ---- snapshots (snapshots written before ACLs existed have none of these keys) ----

    def snapshot(self) -> dict[str, Any]:
        return {
            "acl_policies": list(self.policies.values()),
            "acl_tokens": list(self.tokens.values()),
            "acl_bootstrap_index": self.bootstrap_index,
            "acl_policies_index": self.policies_index,
            "acl_tokens_index": self.tokens_index,
        }

    def restore(self, data: dict[str, Any]) -> None:
        for policy in data.get("acl_policies") or []:
            self.policies[policy["ID"]] = policy
            self.policy_names[policy["Name"].lower()] = policy["ID"]
        for tok in data.get("acl_tokens") or []:
            self.tokens[tok["AccessorID"]] = tok
            self.secret_ids[tok["SecretID"]] = tok["AccessorID"]
        self.bootstrap_index = data.get("acl_bootstrap_index", 0)
        self.policies_index = data.get("acl_policies_index", 0)
        self.tokens_index = data.get("acl_tokens_index", 0)
