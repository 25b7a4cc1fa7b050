"""Go's `flag` package, as much of it as Consul's commands use (`-name x`, `-name=x`,
`--name x`; parsing stops at the first argument that is not a flag), and the error a client
command ends with. Stdlib only: a client command must start fast."""

from __future__ import annotations

from typing import Any


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
