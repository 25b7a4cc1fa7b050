"""Go encoding/json behaviour and error texts (cluster/gojson.py).

`go_decode_strict` is json.NewDecoder(body) with DisallowUnknownFields (how Consul reads request
bodies); `go_unmarshal` is json.Unmarshal (how it reads the token's JSON).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.gojson import GoJSONError, go_decode_strict, go_unmarshal

REQ = {
    "PeerName": "string",
    "Partition": "string",
    "Meta": "map[string]string",
    "ServerExternalAddresses": "[]string",
}
REQ_TYPE = "api.PeeringGenerateTokenRequest"
NESTED = {"Name": "string", "Remote": {"Datacenter": "string"}}

SETTINGS = settings(max_examples=150, deadline=None)


def strict(raw: bytes | str, schema=None) -> dict:
    raw = raw.encode() if isinstance(raw, str) else raw
    return go_decode_strict(raw, schema or REQ, REQ_TYPE)


def unmarshal(raw: bytes | str, schema=None) -> dict:
    raw = raw.encode() if isinstance(raw, str) else raw
    return go_unmarshal(raw, schema or REQ, REQ_TYPE)


def strict_error(raw: bytes | str, schema=None) -> str:
    with pytest.raises(GoJSONError) as e:
        strict(raw, schema)
    return str(e.value)


def unmarshal_error(raw: bytes | str, schema=None) -> str:
    with pytest.raises(GoJSONError) as e:
        unmarshal(raw, schema)
    return str(e.value)


# ---- the texts Consul users see ----


def test_empty_body_is_eof_for_the_decoder():
    assert strict_error(b"") == "EOF"


def test_whitespace_only_body_is_eof_for_the_decoder():
    assert strict_error(b" \r\n\t ") == "EOF"


def test_empty_input_is_unexpected_end_of_json_input_for_unmarshal():
    assert unmarshal_error(b"") == "unexpected end of JSON input"
    assert unmarshal_error(b"\n") == "unexpected end of JSON input"


def test_abc_is_invalid_character_looking_for_beginning_of_value():
    text = "invalid character 'a' looking for beginning of value"
    assert strict_error("abc") == text
    assert unmarshal_error("abc") == text


def test_unknown_field_is_refused_by_the_strict_decoder():
    assert strict_error('{"Foo":1}') == 'json: unknown field "Foo"'


def test_unknown_field_is_ignored_by_unmarshal():
    assert unmarshal('{"Foo":1,"PeerName":"a"}') == {"PeerName": "a"}


def test_keys_match_fields_case_insensitively():
    assert strict('{"peername":"x"}') == {"PeerName": "x"}
    assert strict('{"PEERNAME":"x","meta":{"K":"v"}}') == {"PeerName": "x", "Meta": {"K": "v"}}


def test_the_last_of_two_case_variants_wins():
    assert strict('{"PeerName":"a","peername":"b"}') == {"PeerName": "b"}


def test_kelvin_sign_and_long_s_fold_like_go():
    assert strict('{"\u212aey":"v"}', {"Key": "string"}) == {"Key": "v"}
    assert strict('{"\u017feverName":"v"}', {"SeverName": "string"}) == {"SeverName": "v"}


def test_non_ascii_letters_that_upper_case_to_ascii_pairs_do_not_match():
    # Python's "ß".upper() is "SS"; Go's fold leaves ß alone.
    assert strict_error('{"Addreßes":"v"}', {"Addresses": "string"}) == (
        'json: unknown field "Addreßes"'
    )


def test_number_into_string_field_names_the_go_struct_field():
    assert strict_error('{"PeerName":1}') == (
        "json: cannot unmarshal number into Go struct field "
        "PeeringGenerateTokenRequest.PeerName of type string"
    )


def test_bool_into_string_field():
    assert strict_error('{"PeerName":true}') == (
        "json: cannot unmarshal bool into Go struct field "
        "PeeringGenerateTokenRequest.PeerName of type string"
    )


def test_array_into_map_field():
    assert strict_error('{"Meta":["a"]}') == (
        "json: cannot unmarshal array into Go struct field "
        "PeeringGenerateTokenRequest.Meta of type map[string]string"
    )


def test_object_into_string_slice_field():
    assert strict_error('{"ServerExternalAddresses":{}}') == (
        "json: cannot unmarshal object into Go struct field "
        "PeeringGenerateTokenRequest.ServerExternalAddresses of type []string"
    )


def test_number_inside_a_map_or_slice_reports_the_element_type():
    assert strict_error('{"Meta":{"a":1}}') == (
        "json: cannot unmarshal number into Go struct field "
        "PeeringGenerateTokenRequest.Meta of type string"
    )
    assert strict_error('{"ServerExternalAddresses":["a",2]}') == (
        "json: cannot unmarshal number into Go struct field "
        "PeeringGenerateTokenRequest.ServerExternalAddresses of type string"
    )


def test_nested_struct_field_path():
    assert unmarshal_error('{"Remote":{"Datacenter":5}}', NESTED) == (
        "json: cannot unmarshal number into Go struct field "
        "PeeringGenerateTokenRequest.Remote.Datacenter of type string"
    )


def test_the_first_problem_in_document_order_is_reported():
    assert strict_error('{"Foo":1,"PeerName":1}') == 'json: unknown field "Foo"'
    assert strict_error('{"PeerName":1,"Foo":1}').endswith("PeerName of type string")


def test_top_level_array_cannot_be_unmarshalled_into_the_request():
    text = "json: cannot unmarshal array into Go value of type api.PeeringGenerateTokenRequest"
    assert strict_error("[]") == text
    assert unmarshal_error("[1]") == text


@pytest.mark.parametrize("raw,kind", [('"x"', "string"), ("1", "number"), ("true", "bool")])
def test_top_level_scalars_name_their_json_kind(raw, kind):
    assert strict_error(raw) == (
        f"json: cannot unmarshal {kind} into Go value of type api.PeeringGenerateTokenRequest"
    )


def test_null_body_decodes_to_nothing():
    assert strict("null") == {}
    assert unmarshal(" null ") == {}


def test_null_fields_are_zero_values():
    assert strict('{"PeerName":null,"Meta":null}') == {}
    assert strict('{"Meta":{"a":null},"ServerExternalAddresses":["x",null]}') == {
        "Meta": {"a": ""}, "ServerExternalAddresses": ["x", ""]
    }


def test_trailing_data_after_the_first_value_is_ignored_by_the_decoder():
    assert strict('{"PeerName":"a"} garbage') == {"PeerName": "a"}
    assert strict('{"PeerName":"a"}{"PeerName":"b"}') == {"PeerName": "a"}
    assert strict("null,") == {}


def test_trailing_data_is_an_error_for_unmarshal():
    assert unmarshal_error('{"PeerName":"a"} garbage') == (
        "invalid character 'g' after top-level value"
    )


def test_truncated_input_is_unexpected_eof_for_the_decoder():
    for raw in ('{"PeerName":"x"', '{"PeerName"', '"abc', "[", "{", "tru", "-", "1.", "1e"):
        assert strict_error(raw) == "unexpected EOF", raw


def test_truncated_containers_are_unexpected_end_of_json_input_for_unmarshal():
    for raw in ('{"PeerName":"x"', '{"PeerName"', '"abc', "[", "{", '{"a":'):
        assert unmarshal_error(raw) == "unexpected end of JSON input", raw


def test_truncated_literals_report_the_space_go_scans_at_eof():
    assert unmarshal_error("tru") == "invalid character ' ' in literal true (expecting 'e')"
    assert unmarshal_error("-") == "invalid character ' ' in numeric literal"
    assert unmarshal_error("1.") == "invalid character ' ' after decimal point in numeric literal"
    assert unmarshal_error("1e") == "invalid character ' ' in exponent of numeric literal"


@pytest.mark.parametrize(
    "raw,text",
    [
        ("[1 2]", "invalid character '2' after array element"),
        ('{"a" 1}', "invalid character '1' after object key"),
        ('{"a":1 "b":2}', "invalid character '\"' after object key:value pair"),
        ('{"a":1,}', "invalid character '}' looking for beginning of object key string"),
        ("{1:2}", "invalid character '1' looking for beginning of object key string"),
        ("[1,]", "invalid character ']' looking for beginning of value"),
        ('"\\x"', "invalid character 'x' in string escape code"),
        ('"\\u12g4"', "invalid character 'g' in \\u hexadecimal character escape"),
        ('"a\x01"', "invalid character '\\x01' in string literal"),
        ('"a\n"', "invalid character '\\n' in string literal"),
        ("trux", "invalid character 'x' in literal true (expecting 'e')"),
        ("fals0", "invalid character '0' in literal false (expecting 'e')"),
        ("nil", "invalid character 'i' in literal null (expecting 'u')"),
        ("-x", "invalid character 'x' in numeric literal"),
        ("1.x", "invalid character 'x' after decimal point in numeric literal"),
        ("1e+x", "invalid character 'x' in exponent of numeric literal"),
        ("NaN", "invalid character 'N' looking for beginning of value"),
        ('{"PeerName":NaN}', "invalid character 'N' looking for beginning of value"),
        ("Infinity", "invalid character 'I' looking for beginning of value"),
        ("-Infinity", "invalid character 'I' in numeric literal"),
        ("'a'", "invalid character '\\'' looking for beginning of value"),
        ("\\", "invalid character '\\\\' looking for beginning of value"),
        (b"\xef\xbb\xbf{}", "invalid character '\u00ef' looking for beginning of value"),
        (b"\x80", "invalid character '\\u0080' looking for beginning of value"),
        (b"\xa0", "invalid character '\\u00a0' looking for beginning of value"),
        (b"\x7f", "invalid character '\\x7f' looking for beginning of value"),
    ],
)
def test_syntax_errors_use_gos_scanner_texts(raw, text):
    assert strict_error(raw) == text
    assert unmarshal_error(raw) == text


def test_a_number_python_would_stop_early_in_is_still_a_syntax_error():
    # Python reads `1` from `1.x`; Go's decoder refuses the literal.
    assert strict_error("1.x") == "invalid character 'x' after decimal point in numeric literal"
    assert strict_error("01") == (
        "json: cannot unmarshal number into Go value of type api.PeeringGenerateTokenRequest"
    )


def test_a_huge_integer_is_a_type_error_not_a_crash():
    raw = '{"PeerName":' + "9" * 5000 + "}"
    assert strict_error(raw).endswith("PeerName of type string")
    assert unmarshal_error(raw).endswith("PeerName of type string")


def test_a_huge_integer_in_an_ignored_field_is_fine():
    assert unmarshal('{"X":' + "1" * 5000 + ',"PeerName":"a"}') == {"PeerName": "a"}


# ---- text: invalid UTF-8 and unpaired surrogates become U+FFFD, as in Go ----


def test_an_unpaired_surrogate_escape_becomes_the_replacement_character():
    assert strict('{"PeerName":"a\\ud800b"}') == {"PeerName": "a\ufffdb"}
    assert strict('{"Meta":{"\\udc00":"\\ud83d"}}') == {"Meta": {"\ufffd": "\ufffd"}}


def test_a_surrogate_pair_escape_is_one_character():
    assert strict('{"PeerName":"\\ud83d\\ude00"}') == {"PeerName": "\U0001f600"}


def test_each_invalid_utf8_byte_in_a_string_becomes_one_replacement_character():
    assert strict(b'{"PeerName":"\xff\xe2\x82x"}') == {"PeerName": "\ufffd\ufffd\ufffdx"}


def test_unknown_field_names_are_quoted_like_gos_percent_q():
    assert strict_error(b'{"\xc3\xa9":1}') == 'json: unknown field "\u00e9"'
    assert strict_error('{"a\\u0001\\"":1}') == 'json: unknown field "a\\x01\\""'
    assert strict_error('{"\\ud800":1}') == 'json: unknown field "\ufffd"'


# ---- depth ----


def test_nesting_deeper_than_gos_limit_is_exceeded_max_depth():
    assert strict_error("[" * 10001) == "invalid character '[' exceeded max depth"
    assert unmarshal_error("{\"a\":" * 10001) == "invalid character '{' exceeded max depth"


def test_deep_but_valid_array_is_a_type_error_not_a_recursion_error():
    raw = "[" * 5000 + "]" * 5000
    text = "json: cannot unmarshal array into Go value of type api.PeeringGenerateTokenRequest"
    assert strict_error(raw) == text
    assert unmarshal_error(raw) == text


def test_deep_value_inside_an_object_is_a_go_json_error():
    raw = '{"Meta":' + "[" * 5000 + "]" * 5000 + "}"
    assert isinstance(strict_error(raw), str)
    assert isinstance(unmarshal_error(raw), str)


def test_deep_truncated_input_is_unexpected_eof():
    assert strict_error("[" * 5000) == "unexpected EOF"
    assert unmarshal_error("[" * 5000) == "unexpected end of JSON input"


# ---- properties ----


def _decodes_or_go_error(raw: bytes) -> None:
    for decode in (go_decode_strict, go_unmarshal):
        try:
            out = decode(raw, REQ, REQ_TYPE)
        except GoJSONError as e:
            assert str(e)
            str(e).encode("utf-8")
            continue
        assert isinstance(out, dict)
        assert set(out) <= set(REQ)
        json.dumps(out).encode("utf-8")  # every string is valid text
        for value in out.values():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for k, v in items:
                (k + (v if isinstance(v, str) else "".join(v))).encode("utf-8")


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_only_go_json_error(raw):
    _decodes_or_go_error(raw)


json_fragments = st.sampled_from(
    ["{", "}", "[", "]", ",", ":", '"', "\\", "\\u", "d800", "null", "true", "-", "0", "1e",
     ".", " ", "\n", "NaN", "Infinity", '"PeerName"', '"Meta"', '"peername"', '"x"', "\x00",
     "\u00e9", "\ud800", "9" * 30]
)


@SETTINGS
@given(st.lists(json_fragments, max_size=40).map("".join))
def test_json_like_text_decodes_or_raises_only_go_json_error(text):
    _decodes_or_go_error(text.encode("utf-8", "surrogatepass"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(list(REQ) + ["peername", "META", "x"]) | st.text(), inner, max_size=4
    ),
    max_leaves=12,
)


@SETTINGS
@given(json_values)
def test_any_json_value_decodes_or_raises_only_go_json_error(value):
    raw = json.dumps(value).encode()
    _decodes_or_go_error(raw)
    _decodes_or_go_error(raw + b" trailing")


@settings(SETTINGS, max_examples=40)
@given(st.integers(1, 12000), st.sampled_from(["[", '{"a":', '{"Meta":[']))
def test_any_nesting_depth_raises_only_go_json_error(depth, opener):
    closer = {"[": "]", '{"a":': "}", '{"Meta":[': "]}"}[opener]
    for raw in (opener * depth, opener * depth + "1" + closer * depth):
        _decodes_or_go_error(raw.encode())


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["PeerName", "Partition"]), st.text(), min_size=1
    ),
    st.dictionaries(st.text(), st.text(), max_size=3),
)
def test_valid_requests_round_trip(fields, meta):
    body = {**fields, "Meta": meta}
    decoded = strict(json.dumps(body))
    assert decoded == body
    assert unmarshal(json.dumps(body, ensure_ascii=False)) == body
