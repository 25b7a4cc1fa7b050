"""List responses built from per-record JSON kept between requests (api/render.RenderedList)."""

from __future__ import annotations

import json

from api.render import RenderedList, go_json


def _rec(rid: str, name: str, index: int = 1) -> dict:
    return {"ID": rid, "Name": name, "ModifyIndex": index}


def _counting_encoder(calls: list[str]):
    def encode(rec: dict, extra: object) -> dict:
        calls.append(rec["ID"])
        return {**rec, "Extra": extra}

    return encode


def test_the_list_is_the_json_array_of_the_records_in_order():
    recs = [_rec("b", "<b>"), _rec("a", "a\u2028")]
    body = RenderedList().render(None, recs, {}, lambda r, x: r)
    assert body == go_json(recs)
    assert json.loads(body) == recs


def test_an_empty_list_is_an_empty_array():
    assert RenderedList().render(None, [], {}, lambda r, x: r) == b"[]"


def test_unchanged_records_are_not_encoded_again():
    cache, calls = RenderedList(), []
    recs = [_rec("a", "a"), _rec("b", "b")]
    cache.render("default", recs, {}, _counting_encoder(calls))
    second = cache.render("default", recs, {}, _counting_encoder(calls))
    assert calls == ["a", "b"]
    assert json.loads(second)[1]["Name"] == "b"


def test_a_replaced_record_is_encoded_again():
    cache, calls = RenderedList(), []
    a, b = _rec("a", "a"), _rec("b", "b")
    cache.render("default", [a, b], {}, _counting_encoder(calls))
    b2 = _rec("b", "b", index=2)
    body = cache.render("default", [a, b2], {}, _counting_encoder(calls))
    assert calls == ["a", "b", "b"]
    assert json.loads(body)[1]["ModifyIndex"] == 2


def test_records_with_live_data_are_always_encoded_afresh():
    cache, calls = RenderedList(), []
    recs = [_rec("a", "a")]
    live = {"a": {"LastHeartbeat": "t1"}}
    cache.render("default", recs, live, _counting_encoder(calls))
    live["a"]["LastHeartbeat"] = "t2"  # stream status changes in place
    body = cache.render("default", recs, live, _counting_encoder(calls))
    assert calls == ["a", "a"]
    assert json.loads(body)[0]["Extra"] == {"LastHeartbeat": "t2"}


def test_each_key_has_its_own_cache():
    cache, calls = RenderedList(), []
    a, b = _rec("a", "a"), _rec("b", "b")
    cache.render("p1", [a], {}, _counting_encoder(calls))
    cache.render("p2", [b], {}, _counting_encoder(calls))
    cache.render("p1", [a], {}, _counting_encoder(calls))
    assert calls == ["a", "b"]


def test_a_record_that_gains_live_data_is_encoded_with_it():
    cache, calls = RenderedList(), []
    recs, live = [_rec("a", "a")], {}
    cache.render("default", recs, live, _counting_encoder(calls))
    live["a"] = {"LastHeartbeat": "t1"}  # a stream started; the record did not change
    body = cache.render("default", recs, live, _counting_encoder(calls))
    assert json.loads(body)[0]["Extra"] == {"LastHeartbeat": "t1"}


def test_a_removed_record_leaves_the_list():
    cache = RenderedList()
    a, b = _rec("a", "a"), _rec("b", "b")
    cache.render("default", [a, b], {}, lambda r, x: r)
    assert json.loads(cache.render("default", [a], {}, lambda r, x: r)) == [a]
