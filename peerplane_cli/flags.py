"""Consul's command-line flags, parsed as Go's `flag` package does (`-name x`, `-name=x`,
`--name x`; parsing stops at the first argument that is not a flag), and the HTTP flags every
client command takes."""

from __future__ import annotations

from typing import Any

FORMATS = ("json", "pretty")


class CommandError(Exception):
    """Print the message on stderr and exit with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Help(Exception):
    """-h/-help: print the usage (the message) and exit 0."""


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
                raise Help(self.help_text())
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


TLS_FLAGS = (
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


def http_flags(fs: FlagSet, partition: bool = True, stale: bool = False) -> None:
    fs.string("http-addr", "", "The `address` and port of the Consul HTTP agent. The value can "
              "be an IP address or DNS address, but it must also include the port. This can "
              "also be specified via the CONSUL_HTTP_ADDR environment variable. The default "
              "value is http://127.0.0.1:8500.")
    fs.string("token", "", "ACL token to use in the request. This can also be specified via "
              "the CONSUL_HTTP_TOKEN environment variable.")
    fs.string("token-file", "", "File containing the ACL token to use in the request. This "
              "can also be specified via the CONSUL_HTTP_TOKEN_FILE environment variable.")
    for name, env, what in TLS_FLAGS:
        fs.string(name, "", f"{what} This can also be specified via the {env} environment "
                  "variable.")
    if partition:
        fs.string("partition", "", "Specifies the admin partition to query.")
    if stale:
        fs.boolean("stale", "Permit any Consul server (non-leader) to respond to this request.")


def format_flag(fs: FlagSet) -> None:
    fs.string("format", "pretty", "Output format {json|pretty} (default: pretty)")


def check_format(fs: FlagSet) -> None:
    if fs["format"] not in FORMATS:
        raise CommandError("Invalid format, valid formats are {json|pretty}")
