"""A bounded, seeded fuzz run against a live cluster, driven by the served OpenAPI document.

Requests come from three sources, spread round-robin over every server (so followers forward):
schemathesis cases built from `/v1/openapi.json` (valid ones and, in negative mode, ones the
document says are invalid), and raw requests the document cannot express (garbage bodies, odd
methods, paths that are not routes). Every answer is checked:

- no 5xx except the documented 503 texts;
- every 4xx is plain text, non-empty, not a JSON object or array (unless the document says that
  status has a JSON body, as autopilot's 429 does);
- no answer carries a Python traceback;
- schemathesis cases also get schemathesis's conformance checks (status code, content type,
  headers and response schema all as documented);
- in a run of only invalid requests, nothing is accepted.

Blocking queries are kept short: a case with `index` gets `wait` of at most 100 ms.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.core import NotSet
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.reads import go_duration

DOCUMENTED_503 = (
    "No cluster leader",
    "Not ready to serve consistent reads",
    "Request outcome unknown",
    "The peering kept changing concurrently",
    "CA has not finished initializing",
    "peering streams are not running on this server",
    "metrics are not enabled on this server",
)
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")
CONFORMANCE = (status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance)
MAX_WAIT = 0.1
_RAW_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


@dataclass
class FuzzStats:
    label: str
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sources: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.failures) < 200:
                self.failures.append(what)
            else:
                self.failures.append("...")  # still counted

    def line(self) -> str:
        statuses = ", ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        sources = ", ".join(f"{k}:{v}" for k, v in sorted(self.sources.items()))
        return (f"FUZZ {self.label}: requests sent {self.sent} ({sources}); statuses "
                f"{{{statuses}}}; failures {len(self.failures)}")


def _json_documented(spec: dict[str, Any], path: str, method: str, status: int) -> bool:
    """Does the document give this operation's `status` answer a JSON body?"""
    op = spec.get("paths", {}).get(path, {}).get(method.lower(), {})
    resp = op.get("responses", {}).get(str(status), {})
    return "application/json" in resp.get("content", {})


def check_answer(
    stats: FuzzStats, spec: dict[str, Any], what: str, method: str, template: str | None,
    status: int, content_type: str, body: bytes,
) -> None:
    """The checks every answer gets, whatever produced the request."""
    with stats.lock:
        stats.sent += 1
        stats.statuses[status] += 1
    text = body.decode("utf-8", "replace")
    if _TRACEBACK.search(text):
        stats.fail(f"{what}: a traceback in the answer ({status}): {text[:300]!r}")
    if status >= 500:
        if status != 503 or not text.startswith(DOCUMENTED_503):
            stats.fail(f"{what}: {status} {text[:300]!r}")
        return
    if 400 <= status < 500 and method != "HEAD":
        if template is not None and _json_documented(spec, template, method, status):
            return
        if not content_type.startswith("text/plain"):
            stats.fail(f"{what}: {status} with Content-Type {content_type!r}: {text[:200]!r}")
        if not text.strip():
            stats.fail(f"{what}: {status} with an empty body")
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, (dict, list)):
            stats.fail(f"{what}: {status} with a JSON error body {text[:200]!r}")


def _short_blocking(case: Any) -> None:
    query = case.query
    if not query or "index" not in query:
        return
    wait = query.get("wait")
    try:
        too_long = wait is None or go_duration(str(wait)) > MAX_WAIT
    except ValueError:
        too_long = False  # an invalid wait is answered 400 at once
    if too_long and not str(wait or "").startswith("-"):
        query["wait"] = "100ms"


def load_schema(spec: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(spec)


def operations(schema: Any, include: Callable[[Any], bool] = lambda op: True) -> list[Any]:
    out = []
    for result in schema.get_all_operations():
        op = result.ok()
        if include(op):
            out.append(op)
    return out


def case_strategy(ops: Iterable[Any], modes: Iterable[GenerationMode]) -> st.SearchStrategy:
    strategies = []
    for op in ops:
        for mode in modes:
            try:
                strategies.append(op.as_strategy(generation_mode=mode))
            except Exception:  # noqa: BLE001 - an operation with nothing to make invalid
                continue
    return st.one_of(strategies)


def mixed(cases: st.SearchStrategy, raw: st.SearchStrategy, raw_share: float = 0.2
          ) -> st.SearchStrategy:
    """`raw_share` of the draws from `raw`, the rest from `cases` (st.one_of would weigh the
    raw strategy like one operation of many)."""
    tenths = round(raw_share * 10)
    return st.integers(0, 9).flatmap(lambda x: raw if x < tenths else cases)


@st.composite
def raw_requests(draw: st.DrawFn, paths: list[str]) -> dict[str, Any]:
    """Requests the document cannot express: garbage bodies, odd methods and paths."""
    method = draw(st.sampled_from(_RAW_METHODS))
    base = draw(st.sampled_from(paths)).replace("{name}", "p").replace("{id}", "x")
    path = draw(st.one_of(
        st.just(base),
        st.builds(lambda b, tail: b.rstrip("/") + "/" + tail, st.just(base),
                  st.text(st.characters(codec="utf-8", exclude_characters="?#"), max_size=20)),
        st.builds(lambda b, q: f"{b}?{q}", st.just(base),
                  st.text(st.characters(codec="utf-8", exclude_characters="#"), max_size=40)),
    ))
    body = draw(st.one_of(
        st.none(),
        st.binary(max_size=300),
        st.sampled_from([b"{", b"[]", b"null", b'{"PeerName":', b"\xff\xfe", b"{}" * 50,
                         b"[" * 5000, b'{"PeerName":"x","Meta":{"k":' + b"[" * 3000]),
        st.builds(lambda v: json.dumps(v).encode(), st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda kids: st.lists(kids, max_size=4)
            | st.dictionaries(st.sampled_from(["PeerName", "peername", "PeeringToken", "Meta",
                                               "Partition", "ServerExternalAddresses", "x"]),
                              kids, max_size=4),
            max_leaves=10)),
    ))
    content_type = draw(st.sampled_from([None, "application/json", "text/plain",
                                         "application/x-www-form-urlencoded"]))
    return {"method": method, "path": path, "body": body, "content_type": content_type}


def _request_schema(spec: dict[str, Any], path: str, method: str) -> dict[str, Any] | None:
    op = spec["paths"].get(path, {}).get(method.lower(), {})
    content = op.get("requestBody", {}).get("content", {})
    return content.get("application/json", {}).get("schema")


def _properties(spec: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return list(schema.get("properties", {}))


def _path_template(spec: dict[str, Any], path: str) -> str | None:
    path = path.split("?", 1)[0]
    for template in spec.get("paths", {}):
        pattern = "^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    return None


@dataclass
class FuzzRun:
    """One seeded run over `base_urls` (round-robin). Hypothesis draws the requests in this
    thread; `workers` threads send them and check the answers, so drawing and sending overlap."""

    spec: dict[str, Any]
    base_urls: list[str]
    stats: FuzzStats
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    conformance: bool = True
    invalid_only: bool = False
    workers: int = 4
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _local: threading.local = field(default_factory=threading.local)

    def body_is_invalid(self, case: Any) -> bool:
        """For the refused-only run: drop the case's query and headers (schemathesis's negative
        mode also adds parameters the document does not declare, which Consul ignores), then
        keep it only if its body alone breaks the document (a missing body included)."""
        case.query = {}
        case.headers = {}
        if isinstance(case.body, NotSet):
            return True
        schema = _request_schema(self.spec, case.operation.path, case.method)
        if schema is None:
            return False
        if isinstance(case.body, dict):
            # Go matches keys case-insensitively: a "peername" key is PeerName, not unknown
            fields = {f.lower(): f for f in _properties(self.spec, schema)}
            if any(fields.get(k.lower(), k) != k for k in case.body):
                return False
        validator = Draft202012Validator({**schema, "components": self.spec["components"]})
        return not validator.is_valid(case.body)

    def _next_base(self) -> str:
        return self.base_urls[next(self._turn) % len(self.base_urls)]

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def send_case(self, case: Any) -> None:
        _short_blocking(case)
        base = self._next_base()
        what = f"{case.method} {case.formatted_path} via {base}"
        try:
            response = case.call(base_url=base, session=self._session(), headers=self.headers,
                                 timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as e:
            with self.stats.lock:
                self.stats.sent += 1
            self.stats.fail(f"{what}: no answer: {e}")
            return
        with self.stats.lock:
            self.stats.sources["schema"] += 1
        content_type = (response.headers.get("content-type") or [""])[0]  # lower-case keys
        check_answer(self.stats, self.spec, what, case.method, case.operation.path,
                     response.status_code, content_type, response.content)
        checks = list(CONFORMANCE) if self.conformance else []
        if self.invalid_only:
            checks.append(negative_data_rejection)
            if 200 <= response.status_code < 300:
                self.stats.fail(f"{what}: an invalid request was accepted "
                                f"({response.status_code}) query={case.query} body={case.body!r}")
        if checks:
            try:
                case.validate_response(response, checks=checks, headers=self.headers)
            except (AssertionError, FailureGroup) as e:
                first = [line for line in str(e).strip().splitlines() if line.strip()]
                self.stats.fail(f"{what}: {' | '.join(first[:8])[:600]}")

    def send_raw(self, raw: dict[str, Any]) -> None:
        base = self._next_base()
        headers = dict(self.headers)
        if raw["content_type"]:
            headers["Content-Type"] = raw["content_type"]
        what = f"raw {raw['method']} {raw['path']!r} via {base}"
        try:
            response = self._session().request(
                raw["method"], base + raw["path"], data=raw["body"], headers=headers,
                timeout=self.timeout, allow_redirects=False,
            )
        except requests.RequestException as e:
            with self.stats.lock:
                self.stats.sent += 1
            self.stats.fail(f"{what}: no answer: {e}")
            return
        with self.stats.lock:
            self.stats.sources["raw"] += 1
        check_answer(self.stats, self.spec, what, raw["method"],
                     _path_template(self.spec, raw["path"]), response.status_code,
                     response.headers.get("Content-Type", ""), response.content)
        if self.invalid_only and 200 <= response.status_code < 300:
            self.stats.fail(f"{what}: an invalid request was accepted ({response.status_code})")

    def _send(self, item: Any) -> None:
        try:
            if isinstance(item, dict):
                self.send_raw(item)
            else:
                self.send_case(item)
        except BaseException as e:  # noqa: BLE001 - a harness bug must show, not vanish
            self.stats.fail(f"harness error on {item!r:.200}: {type(e).__name__}: {e}")

    def run(self, strategy: st.SearchStrategy, count: int, rng_seed: int) -> None:
        """Draw `count` requests from `strategy` (schemathesis cases or raw dicts), seeded,
        and send them with at most 2 x `workers` in flight."""
        slots = threading.Semaphore(2 * self.workers)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fuzz") as pool:

            def done(_f: Any) -> None:
                slots.release()

            @seed(rng_seed)
            @settings(max_examples=count, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(strategy)
            def one(item: Any) -> None:
                slots.acquire()
                pool.submit(self._send, item).add_done_callback(done)

            one()


# ---- requests that must all be refused (the state-unchanged run) ----

_BAD_INDEX = ["abc", "-1", " 1", "1_0", "+1", "\u0661", "1.5", "18446744073709551616", ""]
_BAD_DURATION = ["-1s", "5", "1x", "s", ".s", "1.5", "\u0661s", "1s2", "2562048h", "--1s"]
_BAD_PARTITION = ["Bad_Part", "-a", "a" * 64, "a\n", "\u212a", "a b"]
_BAD_NAMES = ["UPPER", "--AA--", "a" * 64, "-a", "a-", "a_b", "a.b", "", " a", "a\n", "\u212a"]
_BAD_META = [{"consul-x": "v"}, {"": "v"}, {"k k": "v"}, {"k" * 129: "v"}, {"k": "v" * 513},
             {f"k{i}": "v" for i in range(65)}, {"k": "\u00e9" * 257}]
_BAD_TOKENS = ["!!!", "Cg==", "e30=", "bm90IGpzb24=", "e30K", "W10=", "eyJQZWVySUQiOjF9"]
_READS = ["/v1/peerings", "/v1/peering/some-name", "/v1/catalog/services", "/v1/catalog/nodes",
          "/v1/catalog/service/web", "/v1/health/service/web",
          "/v1/config/exported-services/default"]
_BAD_REGISTER = [
    {}, {"Address": "a"}, {"Node": "n"}, {"Node": "n", "Address": "a", "ID": "x"},
    {"Node": "n", "Address": "a", "Service": {"ID": "s"}},
    {"Node": "n", "Address": "a", "Service": {"Service": "s", "Address": "0.0.0.0"}},
    {"Node": "n", "Address": "a", "Check": {"Name": "c", "Status": "bogus"}},
    {"Node": "n", "Address": "a", "Checks": [{"Name": "c", "ServiceID": "missing"}]},
    {"Node": "n", "Address": "a", "Checks": [{}]},
    {"Node": "n", "Address": "a", "PeerName": "p"},
    {"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": "80"}},
    {"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": 1.5}},
    {"Node": "n", "Address": "a", "SkipNodeUpdate": "yes"},
    {"Node": 5, "Address": "a"}, {"Node": "n", "Address": "a", "Datacenter": "elsewhere"},
]
_BAD_DEREGISTER = [{}, {"ServiceID": "s"}, {"Node": 1}, {"Node": "n", "CheckID": []}]
_BAD_ENTRIES = [
    {}, {"Kind": 1}, {"Kind": "nonsense"}, {"Kind": "service-defaults", "Name": "web"},
    {"Kind": "exported-services", "Name": "other"},
    {"Kind": "exported-services", "Name": "default", "Bogus": 1},
    {"Kind": "exported-services", "Name": "default", "Services": [{"Name": "web"}]},
    {"Kind": "exported-services", "Name": "default",
     "Services": [{"Name": "", "Consumers": [{"Peer": "p"}]}]},
    {"Kind": "exported-services", "Name": "default",
     "Services": [{"Name": "web", "Consumers": [{"Peer": "*"}]}]},
    {"Kind": "exported-services", "Name": "default",
     "Services": [{"Name": "web", "Consumers": [{"Peer": "p", "Partition": "default"}]}]},
    {"Kind": "exported-services", "Name": "default", "Services": "web"},
    {"Kind": "exported-services", "Name": "default", "Meta": {"k" * 129: "v"}},
]


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def invalid_requests(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    """One request the API must refuse with a 4xx and without touching any state."""
    kind = draw(st.sampled_from(["read-param", "delete-param", "token-body", "establish-body",
                                 "garbage-body", "method", "path", "too-large", "catalog-body",
                                 "config-body"]))
    method, path, body = "GET", "/v1/peerings", None
    if kind == "read-param":
        path = draw(st.sampled_from(_READS))
        name, value = draw(st.sampled_from(
            [("index", v) for v in _BAD_INDEX] + [("wait", v) for v in _BAD_DURATION]
            + [("max_stale", v) for v in _BAD_DURATION if not v.startswith("-")]
            + [("partition", v) for v in _BAD_PARTITION] + [("stale&consistent", "")]))
        extra = "&index=1" if name == "wait" else ""
        query = name if name == "stale&consistent" else f"{name}={quote(value, safe='')}"
        path = f"{path}?{query}{extra}"
    elif kind == "delete-param":
        method = "DELETE"
        path = f"/v1/peering/fuzz-seed-1?partition={quote(draw(st.sampled_from(_BAD_PARTITION)))}"
    elif kind == "token-body":
        method, path = "POST", "/v1/peering/token"
        body = _json(draw(st.one_of(
            st.builds(lambda n: {"PeerName": n}, st.sampled_from(_BAD_NAMES)),
            st.builds(lambda m: {"PeerName": "fuzz-new", "Meta": m}, st.sampled_from(_BAD_META)),
            st.builds(lambda p: {"PeerName": "fuzz-new", "Partition": p},
                      st.sampled_from(_BAD_PARTITION)),
            st.builds(lambda k: {"PeerName": "fuzz-new", k: "x"},
                      st.sampled_from(["Datacenter", "Token", "Foo", "PeerNames"])),
            st.builds(lambda v: {"PeerName": v}, st.one_of(st.integers(), st.booleans(),
                                                            st.lists(st.text(max_size=3)))),
            st.just({"PeerName": "fuzz-new", "ServerExternalAddresses": "x"}),
            st.just({}),
        )))
    elif kind == "establish-body":
        method, path = "POST", "/v1/peering/establish"
        body = _json(draw(st.one_of(
            st.builds(lambda t: {"PeerName": "fuzz-new", "PeeringToken": t},
                      st.sampled_from(_BAD_TOKENS) | st.text(max_size=30)),
            st.builds(lambda n: {"PeerName": n, "PeeringToken": "e30="},
                      st.sampled_from(_BAD_NAMES)),
            st.just({"PeerName": "fuzz-new"}),
            st.just({"PeeringToken": "e30="}),
        )))
    elif kind == "garbage-body":
        method = "POST"
        path = draw(st.sampled_from(["/v1/peering/token", "/v1/peering/establish"]))
        body = draw(st.one_of(
            st.binary(max_size=200).filter(lambda b: not b.strip().startswith(b"{")),
            st.sampled_from([b"", b"{", b"[]", b"null", b'{"PeerName":', b"\xff\xfe",
                             b"[" * 5000, b'{"PeerName":"x","Meta":{"k":' + b"[" * 3000,
                             b'{"PeerName":"x"' + b" " * 100, b'"PeerName"']),
        ))
    elif kind == "catalog-body":
        method = "PUT"
        path, body = draw(st.sampled_from([
            ("/v1/catalog/register", _json(b)) for b in _BAD_REGISTER
        ] + [("/v1/catalog/deregister", _json(b)) for b in _BAD_DEREGISTER]
          + [("/v1/catalog/register", b) for b in (b"", b"{", b"[]", b'"x"', b"\xff")]))
    elif kind == "config-body":
        method, path = "PUT", draw(st.sampled_from(["/v1/config", "/v1/config?cas=x",
                                                    "/v1/config?cas=-1"]))
        body = _json(draw(st.sampled_from(_BAD_ENTRIES)))
    elif kind == "method":
        method, path = draw(st.sampled_from(
            [(m, p) for m in ("PUT", "PATCH") for p in
             ("/v1/peering/x", "/v1/peerings", "/v1/peering/token", "/v1/status/leader")]
            + [("GET", "/v1/peering/token"), ("DELETE", "/v1/peering/establish"),
               ("POST", "/v1/peerings"), ("POST", "/v1/peering/x")]))
    elif kind == "path":
        method = draw(st.sampled_from(["GET", "POST", "PUT"]))
        path = "/v1/" + draw(st.sampled_from(["peer", "peeringz", "status", "acl/nothing",
                                               "peering-token", "v1/peerings", "operator"]))
    else:  # too-large
        method = "POST"
        path = draw(st.sampled_from(["/v1/peering/token", "/v1/peering/establish"]))
        body = b'{"PeerName":"' + b"a" * (1 << 20) + b'"}'
    return {"method": method, "path": path, "body": body, "content_type": "application/json"}
