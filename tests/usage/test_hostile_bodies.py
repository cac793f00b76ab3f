"""Issue 9, finding 2: no malformed body or event gives a 500, and one bad event never costs the
others of its batch. Item-level problems are that item's `rejected` with field errors; body-level
problems are a 400 with a message (nothing stored). Every answer fits the served OpenAPI schema."""

from __future__ import annotations

import io
import json

import pytest

from tests.conftest import event
from tests.usage.openapi import assert_matches_schema, response_schema
from usage.models import DailyRollup, UsageEvent

EVENTS, QUOTE = "/api/v1/events", "/api/v1/quote"
QUOTE_BODY = {"feature": "generation", "model": "sd15", "steps": 30, "width": 512, "height": 512}


def post_raw(api, path: str, body: bytes | str, content_type: str = "application/json", **extra):
    if isinstance(body, str):
        body = body.encode()
    return api.generic("POST", path, body, content_type=content_type, **extra)


def batch_with(bad_event_json: str) -> str:
    """A batch of [good, <bad event as raw JSON text>, good]."""
    good = [json.dumps(event(event_id=f"good-{n}")) for n in (1, 2)]
    return '{"events": [' + good[0] + ", " + bad_event_json + ", " + good[1] + "]}"


def event_json(**raw_fields: str) -> str:
    """A valid event written as JSON text, with fields added as raw JSON text."""
    text = json.dumps(event(event_id="bad"))[:-1]
    return text + "".join(f', "{name}": {value}' for name, value in raw_fields.items()) + "}"


def stored_ids(workspace) -> list[str]:
    return sorted(UsageEvent.objects.filter(workspace=workspace).values_list("event_id", flat=True))


def assert_400_nothing_stored(response, path, workspace, message):
    assert response.status_code == 400, response.content
    body = assert_matches_schema(response, path)
    assert message in body["detail"], body
    assert stored_ids(workspace) == []


def assert_only_bad_rejected(response, workspace, field, message):
    assert response.status_code == 200, response.content
    answer = assert_matches_schema(response, EVENTS)
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "accepted"]
    assert message in " ".join(answer["results"][1]["errors"][field]), answer["results"][1]
    assert stored_ids(workspace) == ["good-1", "good-2"]
    return answer["results"][1]


# --- Body-level: not JSON as RFC 8259 has it, or beyond what Meterboard reads ----------------


def with_raw(field: str, raw: str, **overrides) -> str:
    """A valid event as JSON text, with `field` set to the raw JSON text `raw`."""
    return json.dumps(event(**{"event_id": "bad", **overrides, field: "PLACEHOLDER"})).replace('"PLACEHOLDER"', raw)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["metadata", "quantity", "event_id"])
def test_nan_and_infinity_anywhere_are_a_400(api, workspace, constant, where):
    raw = f'{{"score": {constant}}}' if where == "metadata" else constant
    response = post_raw(api, EVENTS, batch_with(with_raw(where, raw)))
    assert_400_nothing_stored(response, EVENTS, workspace, "NaN and Infinity are not JSON")


def test_nan_in_a_quote_is_a_400(api, workspace):
    response = post_raw(api, QUOTE, '{"feature": "training", "quantity": NaN}')
    assert_400_nothing_stored(response, QUOTE, workspace, "NaN and Infinity are not JSON")


def test_a_number_beyond_a_double_is_a_400(api, workspace):
    response = post_raw(api, EVENTS, batch_with(event_json(metadata='{"x": 1e400}')))
    assert_400_nothing_stored(response, EVENTS, workspace, "out of range")


@pytest.mark.parametrize("where", ["metadata", "quantity"])
def test_an_integer_of_thousands_of_digits_is_a_400(api, workspace, where):
    digits = "9" * 5000
    raw = {"metadata": f'{{"n": {digits}}}', "quantity": digits}[where]
    response = post_raw(api, EVENTS, batch_with(event_json(**{where: raw})))
    assert_400_nothing_stored(response, EVENTS, workspace, "more than")


def test_a_quote_with_an_integer_of_thousands_of_digits_is_a_400(api, workspace):
    response = post_raw(api, QUOTE, '{"feature": "training", "quantity": ' + "1" * 5000 + "}")
    assert_400_nothing_stored(response, QUOTE, workspace, "more than")


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_a_body_nested_thousands_deep_is_a_400(api, workspace, depth):
    nested = "[" * depth + "]" * depth
    response = post_raw(api, EVENTS, batch_with(event_json(metadata='{"deep": ' + nested + "}")))
    assert_400_nothing_stored(response, EVENTS, workspace, "nested more than")
    response = post_raw(api, QUOTE, '{"metadata": {"a": ' + '{"a": ' * depth + "1" + "}" * depth + "}}")
    assert_400_nothing_stored(response, QUOTE, workspace, "nested more than")


def test_brackets_inside_strings_do_not_count_as_nesting(api, workspace):
    response = post_raw(api, EVENTS, batch_with(json.dumps(event(event_id="deep-text", metadata={"t": "[{" * 1000}))))
    assert response.status_code == 200, response.content
    assert assert_matches_schema(response, EVENTS)["accepted"] == 3


@pytest.mark.parametrize(
    "body",
    [
        '{"events": [{"event_id": "x", "quantity": 1, "quantity": 99999}]}',
        '{"event_id": "x", "feature": "training", "quantity": 1, "quantity": 99999, "occurred_at": "2026-11-20T12:00:00Z"}',
        '{"events": [], "events": [{"event_id": "x"}]}',
        '[{"event_id": "x", "metadata": {"a": 1, "a": 2}}]',
    ],
)
def test_a_duplicate_key_in_any_object_is_a_400(api, workspace, body):
    response = post_raw(api, EVENTS, body)
    assert_400_nothing_stored(response, EVENTS, workspace, "appears twice")


def test_a_quote_with_a_duplicate_key_is_a_400(api, workspace):
    response = post_raw(api, QUOTE, '{"feature": "training", "quantity": 1, "quantity": 99999}')
    assert_400_nothing_stored(response, QUOTE, workspace, "appears twice")


def test_the_billed_duplicate_key_attack_bills_nothing(api, workspace):
    # Last-wins parsing billed this 99,999 trainings; which value the sender meant is unknowable.
    body = ('{"events": [{"event_id": "t-1", "occurred_at": "2026-11-20T12:00:00Z", "feature": "training", '
            '"quantity": 1, "quantity": 99999}]}')
    response = post_raw(api, EVENTS, body)
    assert response.status_code == 400
    assert not DailyRollup.objects.filter(workspace=workspace).exists()


@pytest.mark.parametrize("path", [EVENTS, QUOTE])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
     "*/*", "application/*", "application/json; charset=latin-1", "application/jsonp", ""],
)
def test_a_body_that_is_not_declared_json_is_415(api, workspace, path, content_type):
    body = json.dumps({"events": [event()]} if path == EVENTS else QUOTE_BODY)
    response = post_raw(api, path, body, content_type=content_type)
    assert response.status_code == 415, (content_type, response.content)
    assert "application/json" in assert_matches_schema(response, path)["detail"]
    assert stored_ids(workspace) == []


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON", "application/json; charset=utf-8",
                                          'application/json;charset="UTF-8"'])
def test_json_content_types_are_read(api, workspace, content_type):
    response = post_raw(api, EVENTS, json.dumps([event(event_id="ok")]), content_type=content_type)
    assert response.status_code == 200, response.content
    assert stored_ids(workspace) == ["ok"]


def test_no_credentials_is_401_before_the_content_type_is_looked_at(db, workspace):
    from rest_framework.test import APIClient

    response = APIClient().generic("POST", EVENTS, b"x", content_type="text/plain")
    assert response.status_code == 401
    assert_matches_schema(response, EVENTS)


def chunked(api, path, body: bytes):
    """A request as gunicorn hands a chunked upload to Django: no Content-Length, the decoded
    body in wsgi.input, the Transfer-Encoding header kept."""
    request = dict(HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input": io.BytesIO(body)})
    response = api.generic("POST", path, b"", content_type="application/json", **request)
    assert "CONTENT_LENGTH" not in response.wsgi_request.META
    return response


def test_a_chunked_body_is_read(api, workspace):
    response = chunked(api, EVENTS, json.dumps({"events": [event(event_id="c1"), event(event_id="c2")]}).encode())
    assert response.status_code == 200, response.content
    assert assert_matches_schema(response, EVENTS)["accepted"] == 2
    assert stored_ids(workspace) == ["c1", "c2"]
    response = chunked(api, QUOTE, json.dumps(QUOTE_BODY).encode())
    assert response.status_code == 200, response.content
    assert assert_matches_schema(response, QUOTE)["amount"] == "0.004000"


def test_a_chunked_body_over_the_size_limit_is_413(api, workspace, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"events": [event(metadata={"x": "y" * 3000}) for _ in range(5)]}).encode()
    response = chunked(api, EVENTS, body)
    assert response.status_code == 413, response.content
    assert_matches_schema(response, EVENTS)
    assert stored_ids(workspace) == []


def test_an_empty_chunked_body_is_a_400(api, workspace):
    response = chunked(api, EVENTS, b"")
    assert_400_nothing_stored(response, EVENTS, workspace, "Empty body")


# --- Item-level: that event is rejected with field errors, the others are stored -------------


@pytest.mark.parametrize("value", ['"\\ud800"', '{"k": "a\\udfffb"}', '{"\\ud800": 1}', '{"deep": [["\\udbff"]]}'])
def test_a_lone_surrogate_in_metadata_rejects_only_that_event(api, workspace, value):
    raw = value if value.startswith("{") else '{"note": ' + value + "}"
    response = post_raw(api, EVENTS, batch_with(event_json(metadata=raw)))
    assert_only_bad_rejected(response, workspace, "metadata", "lone surrogate")


def test_a_valid_surrogate_pair_in_metadata_is_stored(api, workspace):
    response = post_raw(api, EVENTS, batch_with(event_json(metadata='{"emoji": "\\ud83d\\ude00"}')))
    assert response.status_code == 200
    assert assert_matches_schema(response, EVENTS)["accepted"] == 3
    assert UsageEvent.objects.get(event_id="bad").metadata == {"emoji": "😀"}


@pytest.mark.parametrize("event_id", ['"\\ud800"', '"gen-\\udc00-1"'])
def test_an_event_id_with_a_lone_surrogate_is_rejected_and_not_echoed(api, workspace, event_id):
    response = post_raw(api, EVENTS, batch_with(with_raw("event_id", event_id)))
    result = assert_only_bad_rejected(response, workspace, "event_id", "lone surrogate")
    assert result["event_id"] is None


@pytest.mark.parametrize("event_id", ["42", "4.5", "true", "[1]", '{"a": 1}', '"' + "x" * 129 + '"'])
def test_the_echoed_event_id_is_a_string_or_null(api, workspace, event_id):
    response = post_raw(api, EVENTS, batch_with(with_raw("event_id", event_id)))
    result = assert_only_bad_rejected(response, workspace, "event_id", "")
    assert result["event_id"] is None


def test_an_unknown_field_named_with_a_lone_surrogate_is_rejected(api, workspace):
    response = post_raw(api, EVENTS, batch_with(event_json(**{"\\ud800": "1"})))
    assert_only_bad_rejected(response, workspace, "non_field_errors", "Unknown field")


@pytest.mark.parametrize(
    "occurred_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+23:59"]
)
def test_an_instant_outside_the_calendar_is_rejected(api, workspace, occurred_at):
    response = post_raw(api, EVENTS, batch_with(json.dumps(event(event_id="bad", occurred_at=occurred_at))))
    assert_only_bad_rejected(response, workspace, "occurred_at", "out of range")
    response = post_raw(api, QUOTE, json.dumps({**QUOTE_BODY, "occurred_at": occurred_at}))
    assert response.status_code == 400
    assert "out of range" in assert_matches_schema(response, QUOTE)["occurred_at"][0]


def test_a_quote_with_a_lone_surrogate_is_400_with_field_errors(api, workspace):
    response = post_raw(api, QUOTE, '{"feature": "training", "metadata": {"a": "\\ud800"}, "\\udc00x": 1}')
    assert response.status_code == 400, response.content
    errors = assert_matches_schema(response, QUOTE)
    assert "lone surrogate" in errors["metadata"][0]
    assert "Unknown field" in errors["non_field_errors"][0]


# --- The schema documents these answers --------------------------------------------------------


@pytest.mark.parametrize("path", [EVENTS, QUOTE])
@pytest.mark.parametrize("status", [400, 401, 403, 413, 415, 429])
def test_the_schema_documents_every_error_answer(db, path, status):
    schema = response_schema(path, "post", status)
    assert schema


def test_the_schema_says_event_id_is_a_string_or_null(db):
    from tests.usage.openapi import served_schema

    event_id = served_schema()["components"]["schemas"]["EventResult"]["properties"]["event_id"]
    assert event_id["anyOf"][0]["type"] == "string" and event_id["anyOf"][1] == {"type": "null"}
