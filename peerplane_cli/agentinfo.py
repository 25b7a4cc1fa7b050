"""What an agent says about itself (`/v1/agent/self`): a node ID kept in the data dir, and its
configuration with the secrets left out."""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

SECRET_FIELDS = frozenset({"cluster_secret", "acl_initial_management_token"})


def node_id(data_dir: str) -> str:
    """Consul's node ID: a UUID chosen on first start and kept in `<data-dir>/node-id`."""
    path = os.path.join(data_dir, "node-id")
    try:
        with open(path) as f:
            value = f.read().strip()
        uuid.UUID(value)
        return value
    except (OSError, ValueError):
        pass
    value = str(uuid.uuid4())
    os.makedirs(data_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(value)
    os.replace(tmp, path)
    return value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def debug_config(cfg: Any) -> dict[str, Any]:
    """The agent's configuration as JSON values; secrets appear as "hidden" (when set)."""
    out = _plain(cfg)
    for name in SECRET_FIELDS:
        if name in out:
            out[name] = "hidden" if out[name] else ""
    return out
