"""The peering token (cluster/peering/token.py): Consul's encoding, validation order and
error texts."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.peering.identity import new_identity
from cluster.peering.token import PeeringToken, TokenError, _b64decode, decode_token

SETTINGS = settings(max_examples=150, deadline=None)
PEER_ID = "8e6a4fbd-1d8c-4f4f-9b77-0a6b4f7a1c11"
SERVER_NAME = "server.dc1.peering.11111111-2222-3333-4444-555555555555.consul"


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return new_identity()["CACert"]


def b64(doc: object) -> str:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return base64.b64encode(text.encode()).decode()


def minimal(**fields: object) -> str:
    doc = {"ServerAddresses": ["10.0.0.1:8503"], "PeerID": PEER_ID}
    doc.update(fields)
    return b64(doc)


def error_of(text: str) -> str:
    with pytest.raises(TokenError) as e:
        decode_token(text)
    return str(e.value)


# ---- encoding ----


def test_encode_emits_base64_of_json_with_consuls_key_order():
    tok = PeeringToken(
        CA=["pem"], ManualServerAddresses=["32.1.2.3:8502"], ServerAddresses=["10.0.0.1:8503"],
        ServerName=SERVER_NAME, PeerID=PEER_ID, EstablishmentSecret="secret",
        Remote={"Partition": "default", "Datacenter": "dc1", "Locality": None},
    )
    doc = json.loads(base64.b64decode(tok.encode()), object_pairs_hook=lambda pairs: pairs)
    assert [k for k, _ in doc] == [
        "CA", "ManualServerAddresses", "ServerAddresses", "ServerName", "PeerID",
        "EstablishmentSecret", "Remote",
    ]
    assert [k for k, _ in dict(doc)["Remote"]] == ["Partition", "Datacenter", "Locality"]


def test_encode_writes_every_key_with_null_for_missing_lists():
    tok = PeeringToken(ServerAddresses=["10.0.0.1:8503"], PeerID="p", EstablishmentSecret="s")
    assert base64.b64decode(tok.encode()).decode() == (
        '{"CA":null,"ManualServerAddresses":null,"ServerAddresses":["10.0.0.1:8503"],'
        '"ServerName":"","PeerID":"p","EstablishmentSecret":"s",'
        '"Remote":{"Partition":"","Datacenter":"","Locality":null}}'
    )


def test_encode_uses_standard_padded_base64():
    tok = PeeringToken(ServerAddresses=["a:1"], PeerID="p")
    text = tok.encode()
    assert len(text) % 4 == 0
    assert base64.b64encode(base64.b64decode(text, validate=True)).decode() == text


def test_encode_then_decode_round_trips(ca_pem):
    tok = PeeringToken(
        CA=[ca_pem], ManualServerAddresses=["lb.example.com:8502"],
        ServerAddresses=["10.0.0.1:8503", "[::1]:8503"], ServerName=SERVER_NAME, PeerID=PEER_ID,
        EstablishmentSecret="5d2b6c2e-6f0e-4a51-8d3c-3c1f0e9b7a10",
        Remote={"Partition": "default", "Datacenter": "dc1", "Locality": None},
    )
    assert decode_token(tok.encode()) == tok


def test_decode_keeps_a_remote_locality():
    tok = decode_token(minimal(Remote={"Datacenter": "dc1", "Locality": {"Region": "r"}}))
    assert tok.Remote == {"Partition": "", "Datacenter": "dc1", "Locality": {"Region": "r"}}


# ---- decoding: Consul's texts ----


def test_illegal_base64_reports_the_byte_offset():
    assert error_of("+++/+++") == "failed to decode token: illegal base64 data at input byte 4"
    assert "illegal base64 data at input byte" in error_of("+++/+++")


@pytest.mark.parametrize(
    "text,offset",
    [
        ("A", 0), ("AB=", 3), ("AB=C", 2), ("ABC=A", 4), ("AB==AB==", 4), ("=AAA", 0),
        ("A=AA", 1), ("ab!c", 2), ("e30K e30K", 4), ("AB\nC", 1), ("é", 0), ("\ud800", 0),
        ("AAAA\n=", 5),
    ],
)
def test_base64_error_offsets_match_gos_decoder(text, offset):
    assert error_of(text) == f"failed to decode token: illegal base64 data at input byte {offset}"


def test_newlines_in_base64_are_ignored():
    assert decode_token(minimal()[:8] + "\r\n" + minimal()[8:]).PeerID == PEER_ID


def test_not_json_is_unexpected_end_of_json_input():
    assert error_of("Cg==") == "unexpected end of JSON input"


def test_empty_object_has_no_server_addresses():
    assert error_of("e30K") == "peering token server addresses value is empty"
    assert error_of(b64({"ServerAddresses": [], "ManualServerAddresses": None})) == (
        "peering token server addresses value is empty"
    )


def test_a_json_syntax_error_is_gos_text():
    assert error_of(b64('{"PeerID":x}')) == "invalid character 'x' looking for beginning of value"


def test_a_wrongly_typed_field_is_gos_unmarshal_text():
    assert error_of(b64({"ServerAddresses": "10.0.0.1:8503"})) == (
        "json: cannot unmarshal string into Go struct field PeeringToken.ServerAddresses "
        "of type []string"
    )
    assert error_of(b64({"Remote": {"Datacenter": 1}})) == (
        "json: cannot unmarshal number into Go struct field PeeringToken.Remote.Datacenter "
        "of type string"
    )


def test_an_address_without_a_port_is_invalid():
    assert error_of(minimal(ServerAddresses=["1.2.3.4"])) == (
        "1.2.3.4 is not a valid peering server address"
    )


@pytest.mark.parametrize("addr", ["1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:-1", "h:", "h:8x",
                                  "::1:8503", "[::1]", "[::1]8503", "a]:80", "[[a]:80",
                                  "h:\u00b2", "h:\u0661\u0662", "h:" + "9" * 5000])
def test_invalid_server_addresses_are_refused(addr):
    assert error_of(minimal(ServerAddresses=[addr])) == (
        f"{addr} is not a valid peering server address"
    )


@pytest.mark.parametrize("addr", ["1.2.3.4:1", "1.2.3.4:65535", "lb.example.com:8502",
                                  "[::1]:8503", "[fe80::1%eth0]:8503", ":8502", "h:+80",
                                  "h:0008502"])
def test_valid_server_addresses_are_accepted(addr):
    assert decode_token(minimal(ServerAddresses=[addr])).ServerAddresses == [addr]


def test_manual_addresses_alone_are_enough_and_are_checked_first():
    assert decode_token(
        minimal(ServerAddresses=None, ManualServerAddresses=["32.1.2.3:8502"])
    ).ManualServerAddresses == ["32.1.2.3:8502"]
    assert error_of(minimal(ServerAddresses=["bad1"], ManualServerAddresses=["bad2"])) == (
        "bad2 is not a valid peering server address"
    )


def test_ca_garbage_is_an_invalid_ca():
    text = error_of(minimal(CA=["garbage"], ServerName=SERVER_NAME))
    assert text.startswith("peering token invalid CA:")
    assert text == "peering token invalid CA: no PEM-encoded data found"


def test_a_ca_pem_block_of_another_type_is_an_invalid_ca():
    pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    assert error_of(minimal(CA=[pem], ServerName=SERVER_NAME)) == (
        "peering token invalid CA: first PEM-block should be CERTIFICATE type"
    )


def test_a_malformed_certificate_is_an_invalid_ca():
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert error_of(minimal(CA=[pem], ServerName=SERVER_NAME)).startswith(
        "peering token invalid CA: "
    )


def test_the_ca_is_checked_before_the_addresses(ca_pem):
    assert error_of(b64({"CA": ["x"]})).startswith("peering token invalid CA:")


def test_a_ca_without_a_server_name_is_refused(ca_pem):
    assert error_of(minimal(CA=[ca_pem])) == "peering token server name value is empty"


def test_no_ca_needs_no_server_name():
    assert decode_token(minimal()).ServerName == ""


def test_an_empty_peer_id_is_refused(ca_pem):
    assert error_of(minimal(PeerID="")) == "peering token peer ID value is empty"
    assert error_of(minimal(CA=[ca_pem], ServerName=SERVER_NAME, PeerID=None)) == (
        "peering token peer ID value is empty"
    )


def test_unknown_keys_are_ignored():
    tok = decode_token(minimal(Extra={"deep": [1, 2]}, Datacenter="dc9"))
    assert tok.PeerID == PEER_ID


def test_keys_are_case_insensitive():
    tok = decode_token(b64({"serveraddresses": ["10.0.0.1:8503"], "PEERID": "p",
                            "establishmentSecret": "s", "remote": {"datacenter": "dc1"}}))
    assert (tok.ServerAddresses, tok.PeerID, tok.EstablishmentSecret) == (
        ["10.0.0.1:8503"], "p", "s"
    )
    assert tok.Remote["Datacenter"] == "dc1"


def test_null_fields_are_zero_values():
    tok = decode_token(minimal(CA=None, ServerName=None, Remote=None))
    assert (tok.CA, tok.ServerName) == (None, "")
    assert tok.Remote == {"Partition": "", "Datacenter": "", "Locality": None}


def test_an_unpaired_surrogate_escape_does_not_reach_the_token():
    tok = decode_token(minimal(EstablishmentSecret="\ud800"))
    assert tok.EstablishmentSecret == "\ufffd"


# ---- properties ----

any_text = st.text(
    st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    | st.sampled_from("+/=\r\nABCabc019"),
    max_size=80,
)


@SETTINGS
@given(any_text)
def test_decode_token_raises_only_token_error_on_arbitrary_text(text):
    try:
        tok = decode_token(text)
    except TokenError as e:
        str(e).encode("utf-8", "surrogatepass")
        return
    assert isinstance(tok, PeeringToken)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["CA", "ServerAddresses", "ManualServerAddresses", "ServerName",
                         "PeerID", "Remote", "Locality", "peerid"]) | st.text(max_size=4),
        inner, max_size=4,
    ),
    max_leaves=10,
)


@SETTINGS
@given(json_values)
def test_decode_token_raises_only_token_error_on_arbitrary_json(doc):
    try:
        decode_token(b64(doc))
    except TokenError:
        pass


@SETTINGS
@given(st.binary(max_size=120))
def test_decode_token_raises_only_token_error_on_arbitrary_decoded_bytes(raw):
    try:
        decode_token(base64.b64encode(raw).decode())
    except TokenError:
        pass


@SETTINGS
@given(st.binary(max_size=60))
def test_base64_of_any_bytes_decodes_back(raw):
    text = base64.b64encode(raw).decode()
    assert _b64decode(text) == raw
    assert _b64decode("\n".join(text[i:i + 5] for i in range(0, len(text), 5))) == raw


hosts = st.text(st.sampled_from("abcxyz019.-"), min_size=1, max_size=20) | st.ip_addresses(
    v=4
).map(str)
addresses = st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(1, 65535))


@SETTINGS
@given(
    st.lists(addresses, min_size=1, max_size=3),
    st.lists(addresses, max_size=2),
    st.text(min_size=1, max_size=40),
    st.text(max_size=40),
    st.dictionaries(st.sampled_from(["Partition", "Datacenter"]), st.text(max_size=10)),
)
def test_any_valid_token_round_trips(servers, manual, peer_id, secret, remote):
    tok = PeeringToken(
        ServerAddresses=servers, ManualServerAddresses=manual or None, PeerID=peer_id,
        EstablishmentSecret=secret, Remote={"Partition": "", "Datacenter": "", "Locality": None,
                                            **remote},
    )
    assert decode_token(tok.encode()) == tok
