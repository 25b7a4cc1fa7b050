"""The error every FSM table raises for a refused command."""

from __future__ import annotations


class CommandError(Exception):
    """A command refused by the FSM; becomes {"error": ..., "kind": ...} in the result."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind
