"""JSON responses: orjson writes the documents Flask's own encoder wrote, and valid JSON where it did not."""
import decimal
import json
import math

import pytest
from flask.json.provider import DefaultJSONProvider
from markupsafe import Markup

DOCUMENTS = [
    {"id": "abc", "steps": [{"index": 1, "prob": 0.123456789012345, "token": "é\n\"<>\u2028"}], "score": None,
     "mine": True, "forced_ids": []},
    [1, 2.5, -0.0, 1e-300, 12345678901234567, "ü"],
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_a_response_parses_to_the_document_flasks_encoder_sent(app, document):
    with app.app_context():
        ours = app.json.response(document)
        flasks = DefaultJSONProvider(app).response(document)
    assert ours.mimetype == "application/json"
    assert json.loads(ours.data) == json.loads(flasks.data) == document


def test_keys_keep_the_order_the_view_built_and_integer_keys_become_strings(app):
    with app.app_context():
        assert app.json.response({"b": 1, "a": 2, 3: "x"}).data == b'{"b":1,"a":2,"3":"x"}'


def test_a_non_finite_number_is_null_not_invalid_json(app):
    with app.app_context():
        body = app.json.response({"entropy": math.nan, "surprisal": math.inf}).data

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(body, parse_constant=refuse) == {"entropy": None, "surprisal": None}


def test_types_orjson_lacks_go_through_flasks_default(app):
    with app.app_context():
        body = app.json.response({"price": decimal.Decimal("1.10"), "html": Markup("<b>x</b>")}).data
    assert json.loads(body) == {"price": "1.10", "html": "<b>x</b>"}


def test_a_poll_is_answered_by_the_orjson_encoder(client):
    created = client.post("/api/jobs", json={"prompt": "The cat sat", "steps": 2}).get_json()
    body = client.get(created["url"]).data
    assert body.startswith(b'{"id":"' + created["id"].encode() + b'","status":"queued"')  # compact, in the view's order
