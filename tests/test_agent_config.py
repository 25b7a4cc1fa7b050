"""Agent configuration as Consul users expect it: JSON/HCL files with Consul's key names
(`--config-file`, `--config-dir`), PEERPLANE_* variables and flags over them, `peerplane
validate`, help for every flag. Servers are started as a user starts them: `peerplane agent`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cluster import eventually, free_ports
from lab.http import call
from peerplane_cli import config

ROOT = Path(__file__).resolve().parents[1]


def peerplane(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
              ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PEERPLANE_", "CONSUL_"))}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "peerplane_cli", *args], env=clean,
                          capture_output=True, text=True, timeout=timeout)


def server_hcl(tmp: Path, http: int, raft: int, peering: int, **extra: str) -> Path:
    secret = tmp / "secret"
    secret.write_text("s3cret")
    lines = [
        'node_name = "from-file"',
        'datacenter = "filedc"',
        f'data_dir = "{tmp / "data"}"',
        'bind_addr = "127.0.0.1"',
        "bootstrap_expect = 1",
        f'retry_join = ["127.0.0.1:{raft}"]',
        f'cluster_secret_file = "{secret}"',
        f"ports {{\n  http = {http}\n  server = {raft}\n  grpc_tls = {peering}\n}}",
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    path = tmp / "server.hcl"
    path.write_text("\n".join(lines) + "\n")
    return path


class Running:
    """One `peerplane agent` process; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PEERPLANE_")}
        clean.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "peerplane_cli", "agent", *args],
                                     env=clean, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def agent_self(port: int) -> dict:
    def ready() -> dict:
        reply = call("GET", f"http://127.0.0.1:{port}/v1/agent/self", timeout=2)
        assert reply.status == 200, reply.text
        return reply.json()

    return eventually(ready, 30, 0.2)


@pytest.mark.integration
def test_a_config_file_alone_starts_a_server(tmp_path: Path) -> None:
    http, raft, peering = free_ports(3)
    path = server_hcl(tmp_path, http, raft, peering)
    with Running("--config-file", str(path)):
        cfg = agent_self(http)["Config"]
        assert (cfg["NodeName"], cfg["Datacenter"]) == ("from-file", "filedc")
        leader = eventually(lambda: call("GET", f"http://127.0.0.1:{http}/v1/status/leader")
                            .json() or None, 30, 0.2)
        assert leader == f"127.0.0.1:{raft}"
        token = call("POST", f"http://127.0.0.1:{http}/v1/peering/token", {"PeerName": "p"})
        assert token.status == 200, token.text


@pytest.mark.integration
def test_a_json_config_dir_alone_starts_a_server(tmp_path: Path) -> None:
    http, raft, peering = free_ports(3)
    (tmp_path / "secret").write_text("s3cret")
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "10-base.json").write_text(json.dumps({
        "datacenter": "jsondc", "data_dir": str(tmp_path / "data"), "node_name": "js1",
        "cluster_secret_file": str(tmp_path / "secret"),
        "ports": {"http": http, "server": raft, "grpc_tls": peering},
    }))
    (conf / "20-join.hcl").write_text('retry_join = ["127.0.0.1"]\nbootstrap_expect = 1\n')
    (conf / "README.txt").write_text("not a config file: skipped")
    with Running("--config-dir", str(conf)):
        self_ = agent_self(http)
        assert self_["Config"]["Datacenter"] == "jsondc"
        # retry_join without a port got the server port
        assert self_["Member"]["Port"] == raft


@pytest.mark.integration
def test_flags_override_the_file(tmp_path: Path) -> None:
    http, raft, peering, other_http = free_ports(4)
    path = server_hcl(tmp_path, http, raft, peering)
    with Running("--config-file", str(path), "--http-port", str(other_http),
                 "--datacenter", "flagdc", env={"PEERPLANE_NODE": "from-env"}):
        cfg = agent_self(other_http)["Config"]
        assert (cfg["NodeName"], cfg["Datacenter"]) == ("from-env", "flagdc")
        with pytest.raises(OSError):
            call("GET", f"http://127.0.0.1:{http}/v1/agent/self", timeout=2)


def test_precedence_is_defaults_files_variables_flags(tmp_path: Path) -> None:
    a = tmp_path / "a.hcl"
    a.write_text('datacenter = "a"\nlog_level = "DEBUG"\nretry_join = ["x"]\n'
                 'ports { http = 1 }\nhold_timeout = 3\n')
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"datacenter": "b", "retry_join": ["y"], "ports": {"http": 2}}))
    flags = config.parse_agent_flags(["--http-port", "4", "--config-file", str(a),
                                      "--config-file", str(b)])
    r = config.resolve(flags, {"PEERPLANE_HTTP_PORT": "3", "PEERPLANE_DATACENTER": "env"},
                       flags.config_file, flags.config_dir)
    v = r.values
    assert v["http_port"] == 4 and r.source["http_port"] == "--http-port"
    assert v["datacenter"] == "env" and r.source["datacenter"] == "PEERPLANE_DATACENTER"
    assert v["log_level"] == "DEBUG" and r.source["log_level"] == f"config file {a}"
    assert v["join"] == ["x", "y"]  # lists add up across files
    assert v["hold_timeout"] == 3.0 and v["raft_port"] == 8300  # a file int for a float; default


def test_bootstrap_expect_0_from_a_variable_unsets_the_files_value(tmp_path: Path) -> None:
    """How one server is started fresh into a running cluster (deploy/compose-join.yml)."""
    f = tmp_path / "server.hcl"
    f.write_text('bootstrap_expect = 3\nretry_join = ["a", "b"]\n')
    assert config.resolve(None, {}, [str(f)]).values["bootstrap_expect"] == 3
    joined = config.resolve(None, {"PEERPLANE_BOOTSTRAP_EXPECT": "0"}, [str(f)]).values
    assert joined["bootstrap_expect"] is None and joined["join"] == ["a", "b"]


def test_flags_may_be_spelled_with_one_dash_as_consul_does(tmp_path: Path) -> None:
    argv = config.go_style_flags(["-config-file=a.hcl", "-data-dir", "/d", "-http-port=1",
                                  "-tls-verify-incoming", "-h", "--node", "n", "-x"])
    assert argv == ["--config-file=a.hcl", "--data-dir", "/d", "--http-port=1",
                    "--tls-verify-incoming", "-h", "--node", "n", "-x"]
    proc = peerplane("agent", "-data-dir", str(tmp_path), "-http-port=x")
    assert proc.stderr == "peerplane agent: --http-port: expected an integer, got 'x'\n"


def test_tls_https_block_wins_over_tls_defaults(tmp_path: Path) -> None:
    f = tmp_path / "tls.hcl"
    f.write_text('tls {\n  defaults {\n    ca_file = "/d/ca.pem"\n    cert_file = "/d/c.pem"\n'
                 '  }\n  https {\n    ca_file = "/h/ca.pem"\n    verify_incoming = true\n  }\n}\n'
                 'acl {\n  enabled = true\n  default_policy = "deny"\n'
                 '  tokens { initial_management = "root" }\n}\nlog_json = true\n')
    v = config.resolve(None, {}, [str(f)]).values
    assert (v["tls_ca_file"], v["tls_cert_file"], v["tls_verify_incoming"]) == \
        ("/h/ca.pem", "/d/c.pem", True)
    assert (v["acl_enabled"], v["acl_default_policy"], v["acl_initial_management_token"]) == \
        (True, "deny", "root")
    assert v["log_format"] == "json"


@pytest.mark.parametrize(("name", "text", "error"), [
    ("unknown.hcl", "ports {\n  htp = 8500\n}\n", 'unknown key "ports.htp"'),
    ("type.json", '{"ports": {"http": "8500"}}', 'ports.http: expected an integer, got "8500"'),
    ("choice.hcl", 'acl { default_policy = "maybe" }\n',
     'acl.default_policy: must be one of allow, deny, got "maybe"'),
    ("list.hcl", 'retry_join = "a,b"\n', 'retry_join: expected a list of strings, got "a,b"'),
    ("block.json", '{"ports": 8500}', "ports: expected a block"),
    ("syntax.hcl", "ports { http = }\n", "invalid HCL: Unexpected token"),
    ("syntax.json", '{"datacenter": }', "invalid JSON: Expecting value: line 1 column 16"),
])
def test_a_bad_file_is_refused_naming_the_key_and_the_reason(
    tmp_path: Path, name: str, text: str, error: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    proc = peerplane("agent", "--config-file", str(path), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith(f"peerplane agent: config file {path}: {error}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()  # refused before anything started


@pytest.mark.parametrize(("text", "error"), [
    ("ports { https = 8501 }\n", "ports.https (config file {path}): HTTPS needs a certificate "
     "and its key (tls.defaults.cert_file, tls.defaults.key_file)"),
    ("ports { http = 70000 }\n", "ports.http (config file {path}): port 70000 is not in "
     "1..65535"),
    ('tls { defaults { verify_incoming = true } }\n', "tls.https.verify_incoming (config file "
     "{path}): verifying client certificates needs a CA (tls.defaults.ca_file)"),
    ("raft_lease = 3.0\n", "raft_lease (config file {path}): need 0 < raft_lease < "
     "raft_election_min <= raft_election_max"),
])
def test_settings_that_do_not_fit_together_are_refused(tmp_path: Path, text: str,
                                                      error: str) -> None:
    path = tmp_path / "x.hcl"
    path.write_text(f'data_dir = "{tmp_path}/d"\n' + text)
    proc = peerplane("validate", str(path))
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"Config validation failed: {error.format(path=path)}\n"


def test_a_bad_variable_or_flag_is_named(tmp_path: Path) -> None:
    proc = peerplane("agent", "--data-dir", str(tmp_path), env={"PEERPLANE_HTTP_PORT": "x"})
    assert proc.returncode == 1
    assert proc.stderr == "peerplane agent: PEERPLANE_HTTP_PORT: expected an integer, got 'x'\n"
    proc = peerplane("agent", "--data-dir", str(tmp_path), "--raft-lease", "soon")
    assert proc.stderr == "peerplane agent: --raft-lease: expected a number, got 'soon'\n"


def test_validate_accepts_good_files_and_directories(tmp_path: Path) -> None:
    path = server_hcl(tmp_path, 8500, 8300, 8503)
    proc = peerplane("validate", str(path), str(ROOT / "deploy" / "config"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Configuration is valid!\n", "")
    proc = peerplane("validate", "-quiet", str(path))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_validate_needs_a_path_and_names_missing_files(tmp_path: Path) -> None:
    proc = peerplane("validate")
    assert (proc.returncode, proc.stderr) == \
        (1, "Must specify at least one config file or directory\n")
    proc = peerplane("validate", str(tmp_path / "nope.hcl"))
    assert (proc.returncode, proc.stderr) == \
        (1, f"Config validation failed: config file {tmp_path / 'nope.hcl'}: no such file\n")


def test_validate_does_not_start_anything(tmp_path: Path) -> None:
    http, raft, peering = free_ports(3)
    path = server_hcl(tmp_path, http, raft, peering)
    assert peerplane("validate", str(path)).returncode == 0
    assert not (tmp_path / "data").exists()
    with pytest.raises(OSError):
        call("GET", f"http://127.0.0.1:{http}/v1/status/leader", timeout=1)


def test_every_agent_flag_has_help_with_its_default_and_variable() -> None:
    proc = peerplane("agent", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for o in config.OPTIONS:
        shown = o.shown or config.show_default(o.default)
        assert f"{o.flag} {o.dest.upper()}" in text or o.kind == "bool", o.flag
        assert f"(default: {shown}; env {o.env}; config {o.keys[0]})" in text, o.flag
    assert "--config-file FILE" in text and "--config-dir DIR" in text


def test_every_option_has_a_config_key_and_a_distinct_variable() -> None:
    assert all(o.keys for o in config.OPTIONS)
    envs = [o.env for o in config.OPTIONS]
    assert len(set(envs)) == len(envs)
