"""Input rules of the API (api/validate.py): peer names, metadata, bodies, with Consul's texts."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.errors import APIError
from api.validate import (
    TOKEN_REQUEST,
    check_meta,
    check_peer_name,
    decode_body,
    partition_of,
)

SETTINGS = settings(max_examples=200, deadline=None)
NAME_RULE = (
    "a valid peering name must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character"
)
META = "meta tags failed validation: "


def refusal(fn, *args) -> APIError:
    with pytest.raises(APIError) as e:
        fn(*args)
    assert e.value.status == 400
    return e.value


# ---- peer names ----


@pytest.mark.parametrize("name", ["a", "0", "123", "a-b", "a--b", "peer-1", "x" * 63,
                                  "a" + "-" * 61 + "b"])
def test_valid_peer_names_are_accepted(name):
    check_peer_name(name)


def test_a_63_character_name_is_accepted_and_64_is_not():
    check_peer_name("a" * 63)
    assert refusal(check_peer_name, "a" * 64).text == f"{'a' * 64} is not a valid peer name: " \
        f"{NAME_RULE}"


def test_consuls_invalid_name_message_is_exact():
    err = refusal(check_peer_name, "--AA--")
    assert err.text == (
        "--AA-- is not a valid peer name: a valid peering name must consist of lower case "
        "alphanumeric characters or '-', and must start and end with an alphanumeric character"
    )


@pytest.mark.parametrize("name", ["", "-a", "a-", "-", "Abc", "aBc", "a_b", "a.b", "a b",
                                  "foo\n", "\nfoo", "é", "a\x00"])
def test_invalid_peer_names_are_refused(name):
    assert refusal(check_peer_name, name).text == f"{name} is not a valid peer name: {NAME_RULE}"


def _is_valid_name(name: str) -> bool:
    allowed = set(string.ascii_lowercase + string.digits + "-")
    return (
        1 <= len(name) <= 63 and set(name) <= allowed and name[0] != "-" and name[-1] != "-"
    )


@SETTINGS
@given(st.text(st.sampled_from(string.ascii_letters + string.digits + "-_.\n é"), max_size=70)
       | st.text(max_size=70))
def test_peer_name_rule_is_a_lowercase_dns_label_of_at_most_63_characters(name):
    try:
        check_peer_name(name)
    except APIError as e:
        assert e.status == 400
        assert not _is_valid_name(name)
    else:
        assert _is_valid_name(name)


# ---- metadata ----


def test_64_pairs_are_accepted():
    check_meta({f"k{i}": "v" for i in range(64)})


def test_65_pairs_are_refused_with_consuls_text():
    err = refusal(check_meta, {f"k{i}": "v" for i in range(65)})
    assert err.text == (
        "meta tags failed validation: Node metadata cannot contain more than 64 key/value pairs"
    )


def test_the_pair_count_is_checked_before_the_pairs():
    meta = {f"k{i}": "v" for i in range(64)}
    meta[""] = "v"
    assert refusal(check_meta, meta).text.endswith("more than 64 key/value pairs")


def test_a_128_character_key_is_accepted_and_129_is_not():
    check_meta({"k" * 128: "v"})
    key = "k" * 129
    assert refusal(check_meta, {key: "v"}).text == (
        f"{META}Couldn't load metadata pair ('{key}', 'v'): Key is too long (limit: 128 "
        "characters)"
    )


def test_a_512_character_value_is_accepted_and_513_is_not():
    check_meta({"k": "v" * 512})
    value = "v" * 513
    assert refusal(check_meta, {"k": value}).text == (
        f"{META}Couldn't load metadata pair ('k', '{value}'): Value is too long (limit: 512 "
        "characters)"
    )


def test_value_length_counts_utf8_bytes_like_go():
    check_meta({"k": "\u00e9" * 256})  # 512 bytes
    value = "\u00e9" * 257  # 257 characters, 514 bytes
    assert refusal(check_meta, {"k": value}).text.endswith(
        "Value is too long (limit: 512 characters)"
    )


def test_the_consul_prefix_is_reserved():
    assert refusal(check_meta, {"consul-version": "1"}).text == (
        f"{META}Couldn't load metadata pair ('consul-version', '1'): Key prefix 'consul-' is "
        "reserved for internal use"
    )


@pytest.mark.parametrize("key", ["consul", "consulx", "Consul-x", "x-consul-"])
def test_keys_merely_resembling_the_prefix_are_allowed(key):
    check_meta({key: "v"})


def test_a_blank_key_is_refused():
    assert refusal(check_meta, {"": "v"}).text == (
        f"{META}Couldn't load metadata pair ('', 'v'): Key cannot be blank"
    )


@pytest.mark.parametrize("key", ["a.b", "a b", "a/b", "a:b", "\u00e9", "a\n", "\na", "k\x00"])
def test_keys_with_invalid_characters_are_refused(key):
    assert refusal(check_meta, {key: "v"}).text == (
        f"{META}Couldn't load metadata pair ('{key}', 'v'): Key contains invalid characters"
    )


def test_invalid_characters_are_reported_before_length():
    key = "." * 200
    assert refusal(check_meta, {key: "v"}).text.endswith("Key contains invalid characters")


def test_length_is_reported_before_the_reserved_prefix():
    key = "consul-" + "k" * 122
    assert refusal(check_meta, {key: "v"}).text.endswith(
        "Key is too long (limit: 128 characters)"
    )


def test_key_rules_allow_letters_digits_dash_and_underscore():
    check_meta({"Abc_DEF-123": "", "_": "any value \u00e9 \n"})


def test_the_empty_map_is_fine():
    check_meta({})


def _meta_ok(meta: dict[str, str]) -> bool:
    allowed = set(string.ascii_letters + string.digits + "_-")
    return len(meta) <= 64 and all(
        k and set(k) <= allowed and len(k) <= 128 and not k.startswith("consul-")
        and len(v.encode("utf-8", "surrogatepass")) <= 512
        for k, v in meta.items()
    )


meta_keys = st.text(st.sampled_from(string.ascii_letters + "_-.é "), max_size=6) | st.sampled_from(
    ["consul-x", "k" * 129, ""]
)
meta_values = st.text(max_size=8) | st.sampled_from(["v" * 513, "\u00e9" * 257, "\ud800"])


@SETTINGS
@given(st.dictionaries(meta_keys, meta_values, max_size=5)
       | st.integers(60, 70).map(lambda n: {f"k{i}": "v" for i in range(n)}))
def test_meta_is_refused_exactly_when_a_rule_is_broken_and_only_with_api_error(meta):
    try:
        check_meta(meta)
    except APIError as e:
        assert e.status == 400
        assert e.text.startswith(META)
        assert not _meta_ok(meta)
    else:
        assert _meta_ok(meta)


# ---- bodies ----


def test_an_empty_body_is_body_decoding_failed_eof():
    err = refusal(decode_body, b"", TOKEN_REQUEST, "api.PeeringGenerateTokenRequest")
    assert err.text == "Body decoding failed: EOF"


def test_invalid_json_body_is_body_decoding_failed_with_gos_text():
    err = refusal(decode_body, b"abc", TOKEN_REQUEST, "api.PeeringGenerateTokenRequest")
    assert err.text == (
        "Body decoding failed: invalid character 'a' looking for beginning of value"
    )


def test_an_unknown_field_is_body_decoding_failed():
    err = refusal(decode_body, b'{"Foo":1}', TOKEN_REQUEST, "api.PeeringGenerateTokenRequest")
    assert err.text == 'Body decoding failed: json: unknown field "Foo"'


def test_a_good_body_decodes_case_insensitively():
    body = decode_body(b'{"peername":"foo","META":{"a":"b"}}', TOKEN_REQUEST,
                       "api.PeeringGenerateTokenRequest")
    assert body == {"PeerName": "foo", "Meta": {"a": "b"}}


@SETTINGS
@given(st.binary(max_size=100))
def test_decode_body_raises_only_a_400_api_error(raw):
    try:
        decode_body(raw, TOKEN_REQUEST, "api.PeeringGenerateTokenRequest")
    except APIError as e:
        assert e.status == 400
        assert e.text.startswith("Body decoding failed: ")


# ---- partitions ----


def test_the_partition_defaults_to_default():
    assert partition_of(None, None) == "default"
    assert partition_of("", "", "") == "default"


def test_the_body_partition_wins_over_query_and_header():
    assert partition_of("q", "h", "b") == "b"
    assert partition_of("q", "h") == "q"
    assert partition_of(None, "h") == "h"


def test_partitions_are_lowercased():
    assert partition_of("Team-A", None) == "team-a"


@pytest.mark.parametrize("value", ["a_b", "-a", "a" * 64, "a\n"])
def test_an_invalid_partition_is_a_400(value):
    assert refusal(partition_of, value, None).status == 400
