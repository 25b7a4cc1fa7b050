"""Issue 15: the cheaper forms of per-request work give the same results as what they replace."""

from __future__ import annotations

import base64
import json
import random
import uuid

from cluster.ids import new_uuid, request_uuid
from cluster.metrics import Metrics
from cluster.peering.token import PeeringToken
from cluster.state.ordered import Grouped, Ordered

_CHARS = [chr(i) for i in range(0x80)] + ["é", "\u2028", "\ud800", "😀", "<", ">", "&"]


def _json_token(t: PeeringToken) -> str:
    doc = {"CA": t.CA, "ManualServerAddresses": t.ManualServerAddresses,
           "ServerAddresses": t.ServerAddresses, "ServerName": t.ServerName,
           "PeerID": t.PeerID, "EstablishmentSecret": t.EstablishmentSecret, "Remote": t.Remote}
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def test_a_token_encodes_to_the_bytes_of_pythons_json_whatever_its_text():
    rnd = random.Random(15)

    def text() -> str:
        return "".join(rnd.choice(_CHARS) for _ in range(rnd.randint(0, 6)))

    for _ in range(3000):
        token = PeeringToken(
            CA=[text()], ManualServerAddresses=rnd.choice([None, [text(), text()]]),
            ServerAddresses=[text()], ServerName=text(), PeerID=text(),
            EstablishmentSecret=text(),
            Remote={"Partition": text(), "Datacenter": text(), "Locality": None})
        assert token.encode() == _json_token(token)


def test_new_uuid_is_a_random_version_4_uuid_in_its_usual_text():
    seen = set()
    for _ in range(2000):
        text = new_uuid()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
        seen.add(text)
    assert len(seen) == 2000


def test_cached_metric_children_count_as_labels_did():
    m = Metrics()
    for code in (200, 200, 404):
        m.observe_http("/v1/peering/{name}", "GET", code, 0.002)
    m.observe_http("/v1/peering/{name}", "BREW", 405, 0.001)
    m.observe_parsed("/v1/peering/token", "POST")
    m.observe_parsed("/v1/peering/token", "POST")
    text = m.prometheus()[0].decode()
    assert ('peerplane_http_requests_total{code="200",method="GET",route="/v1/peering/{name}"} '
            '2.0') in text
    assert ('peerplane_http_requests_total{code="405",method="OTHER",route="/v1/peering/{name}"} '
            '1.0') in text
    assert ('peerplane_http_request_duration_seconds_count{method="GET",'
            'route="/v1/peering/{name}"} 3.0') in text
    assert ('peerplane_http_parsed_total{method="POST",route="/v1/peering/token"} 2.0') in text
    samples = {(s["Labels"]["method"], s["Count"]) for s in m.json()["Samples"]
               if s["Name"] == "peerplane.http.request.duration_seconds"}
    assert samples == {("GET", 3), ("OTHER", 1)}


def test_ordered_blocks_keep_every_record_in_key_order_through_puts_and_drops():
    rnd = random.Random(15)
    for size in (10, 300, 3000):
        ordered = Ordered(lambda rec: rec["k"])
        model: dict[int, dict[str, int]] = {}
        for step in range(size):
            k = rnd.randint(0, size // 3)
            if k in model and rnd.random() < 0.4:
                ordered.drop(model.pop(k))
            else:
                new = {"k": k, "v": step}
                ordered.put(model.get(k), new)
                model[k] = new
            ordered.drop({"k": -1})  # not there: nothing changes
        records = ordered.records()
        assert [r["k"] for r in records] == sorted(model) and len(ordered) == len(model)
        assert all(r is model[r["k"]] for r in records)


def test_grouped_lists_each_group_and_all_groups_in_key_order_as_records_move():
    rnd = random.Random(16)
    grouped = Grouped(lambda rec: rec["g"], lambda rec: (rec["k"], rec["g"]))
    model: dict[tuple[int, str], dict[str, object]] = {}
    for step in range(2000):
        key = (rnd.randint(0, 300), rnd.choice("abc"))
        if key in model and rnd.random() < 0.3:
            grouped.drop(model.pop(key))
        else:
            new = {"k": key[0], "g": key[1], "v": step}
            grouped.put(model.get(key), new)
            model[key] = new
    assert grouped.records() == [model[key] for key in sorted(model)]
    for g in "abcd":
        assert grouped.records(g) == [model[key] for key in sorted(model) if key[1] == g]


def test_request_ids_are_uuid_text_and_never_repeat():
    ids = [request_uuid() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids[:100])
