"""Property tests for the decoders that take hostile input and had none yet: read query
parameters (api/reads.py: Go durations, ?index, the consistency flags) and peer-stream frames
(cluster/peering/peerstream.py). JSON bodies, tokens, names and meta are covered by test_gojson.py,
test_token.py and test_validate.py."""

from __future__ import annotations

import math
from fractions import Fraction

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from api.errors import APIError
from api.reads import DEFAULT_WAIT, MAX_WAIT, go_duration, parse_read_options
from cluster.peering.peerstream import MAX_FRAME, FrameError, pack, unpack

SETTINGS = settings(max_examples=300, deadline=None)
UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 10**6, "s": 10**9,
            "m": 60 * 10**9, "h": 3600 * 10**9}
MAX_NS = (1 << 63) - 1


def go_duration_string(ns: int) -> str:
    """Go's time.Duration.String(), the canonical text ParseDuration must read back."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 10**9:
        for unit, scale in (("ns", 1), ("µs", 10**3), ("ms", 10**6)):
            if u < scale * 1000:
                whole, frac = divmod(u, scale)
                digits = f"{frac:0{len(str(scale)) - 1}d}".rstrip("0") if scale > 1 else ""
                return f"{sign}{whole}{'.' + digits if digits else ''}{unit}"
    secs, frac = divmod(u, 10**9)
    frac_text = f"{frac:09d}".rstrip("0")
    hours, rest = divmod(secs, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{secs}{'.' + frac_text if frac_text else ''}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{out}"
    if minutes:
        return f"{sign}{minutes}m{out}"
    return sign + out


# ---- Go durations (?wait, ?max_stale) ----


@SETTINGS
@given(st.text(max_size=30))
def test_go_duration_raises_only_value_error(text):
    try:
        value = go_duration(text)
    except ValueError:
        return
    assert math.isfinite(value)
    assert abs(value) <= MAX_NS / 1e9 + 1


@SETTINGS
@given(st.integers(-MAX_NS, MAX_NS))
def test_go_duration_reads_back_what_go_writes(ns):
    assert math.isclose(go_duration(go_duration_string(ns)), ns / 1e9, rel_tol=1e-12,
                        abs_tol=1e-9)


_component = st.tuples(
    st.integers(0, 10**6).map(str) | st.just(""),
    st.text("0123456789", max_size=4).map(lambda d: "." + d) | st.just(""),
    st.sampled_from(sorted(UNITS_NS)),
).filter(lambda c: c[0] or len(c[1]) > 1)


@SETTINGS
@given(st.sampled_from(["", "+", "-"]), st.lists(_component, min_size=1, max_size=4))
def test_go_duration_sums_its_components(sign, components):
    text = sign + "".join(a + b + u for a, b, u in components)
    exact = sum(
        (Fraction(a or "0") + (Fraction("0" + b) if len(b) > 1 else Fraction(0))) * UNITS_NS[u]
        for a, b, u in components)
    if exact > MAX_NS:
        with pytest.raises(ValueError):
            go_duration(text)
        return
    expected = float(-exact if sign == "-" else exact) / 1e9
    assert math.isclose(go_duration(text), expected, rel_tol=1e-9, abs_tol=1e-9 * len(components))


@pytest.mark.parametrize("text", ["", "+", "-", ".", "s", "1", "0.0", "1x", "1s2", "1 s", " 1s",
                                  "1e3s", "\u0661s", "\uff11s", "1.5.5s", "--1s", "2562048h",
                                  "9223372036854775808ns"])
def test_go_duration_refuses_what_go_refuses(text):
    with pytest.raises(ValueError):
        go_duration(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("-0", 0.0), ("+0", 0.0), ("1.s", 1.0), (".5s", 0.5), ("1h1m1s", 3661.0),
    ("1µs", 1e-6), ("1μs", 1e-6), ("1us", 1e-6), ("9223372036854775807ns", MAX_NS / 1e9),
    ("-9223372036854775808ns", -(1 << 63) / 1e9),
])
def test_go_duration_accepts_what_go_accepts(text, seconds):
    assert go_duration(text) == pytest.approx(seconds)


# ---- read options ----

_KEYS = ["stale", "consistent", "leader", "max_stale", "index", "wait", "pretty", "x"]
_VALUES = (st.text(max_size=12) | st.sampled_from(["", "0", "1", "10s", "5m", "1h", "-1s",
                                                   "18446744073709551615",
                                                   "18446744073709551616", "\u0661"]))
_MESSAGES = ("Cannot specify ?stale with ?consistent, conflicting semantics.", "Invalid index",
             "Invalid wait time")


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), max_size=6))
def test_read_options_are_an_answer_or_a_400(pairs):
    query = MultiDict(pairs)
    try:
        opts = parse_read_options(query)
    except APIError as e:
        assert e.status == 400
        assert e.text in _MESSAGES or e.text.startswith('Invalid max_stale value "')
        return
    assert opts.mode in ("leader", "consistent", "stale")
    assert 0 <= opts.wait <= MAX_WAIT
    if "wait" not in query:
        assert opts.wait == DEFAULT_WAIT
    if "leader" in query:
        assert opts.mode != "stale"
    if opts.mode != "stale":
        assert opts.max_stale is None
    if "index" in query:
        text = query["index"]  # Go's strconv.ParseUint(s, 10, 64)
        assert text.isascii() and text.isdigit() and int(text) < 1 << 64
        assert opts.index == int(text)
    else:
        assert opts.index is None


@SETTINGS
@given(st.text(max_size=25))
def test_index_is_accepted_exactly_when_go_parses_it(text):
    go_ok = text.isascii() and text.isdigit() and int(text) < 1 << 64
    try:
        opts = parse_read_options(MultiDict(index=text))
    except APIError as e:
        assert not go_ok and e.text == "Invalid index"
    else:
        assert go_ok and opts.index == int(text)


def test_huge_numbers_are_refused_or_read_without_crashing():
    assert parse_read_options(MultiDict(index="0" * 5000 + "7")).index == 7
    assert go_duration("0" * 5000 + "1s") == 1.0
    for text in ("9" * 5000, "1" + "0" * 20):
        with pytest.raises(APIError):
            parse_read_options(MultiDict(index=text))
        with pytest.raises(ValueError):
            go_duration(text + "s")


def test_stale_and_consistent_conflict_whatever_their_values():
    with pytest.raises(APIError) as e:
        parse_read_options(MultiDict(stale="false", consistent="0"))
    assert e.value.text == "Cannot specify ?stale with ?consistent, conflicting semantics."


def test_a_negative_wait_is_invalid_even_minus_zero():
    for text in ("-1s", "-0", "-0s"):
        with pytest.raises(APIError):
            parse_read_options(MultiDict(wait=text))


# ---- peer-stream frames ----

_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats(allow_nan=False)
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["Type", "PeerID"]), kids,
                      max_size=4),
    max_leaves=12,
)


def _check_frame(data: bytes) -> None:
    try:
        frame = unpack(data)
    except FrameError as e:
        assert str(e)
        return
    assert isinstance(frame, dict) and isinstance(frame["Type"], str)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_are_a_frame_or_a_frame_error(data):
    _check_frame(data)


@SETTINGS
@given(_msgpack_values, st.binary(max_size=3))
def test_any_msgpack_is_a_frame_or_a_frame_error(value, tail):
    _check_frame(msgpack.packb(value, use_bin_type=True) + tail)


@SETTINGS
@given(st.dictionaries(st.text(max_size=8), _msgpack_values, max_size=4), st.text(max_size=12))
def test_frames_round_trip(fields, kind):
    frame = {**fields, "Type": kind}
    assert unpack(pack(frame)) == frame


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x91" * 100_000, b"\x81\x01\x02", b"\x81\xc0\x01", b"\xd4\xff\x00",
    b"\xa2\xff\xfe", b"\x80", b"\x81\xa4Type\x01", msgpack.packb({"Type": "Open"}) + b"\x00",
])
def test_malformed_frames_are_frame_errors(data):
    with pytest.raises(FrameError):
        unpack(data)


def test_a_frame_over_the_limit_is_refused_before_decoding():
    with pytest.raises(FrameError, match="over the limit"):
        unpack(b"\xc6" + (MAX_FRAME + 1).to_bytes(4, "big") + b"\x00" * (MAX_FRAME + 1))
