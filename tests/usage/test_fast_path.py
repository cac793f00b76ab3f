"""POST /api/v1/events answers the common call without DRF's dispatch (usage.apis.fast_ingest,
issue 12). These tests hold it to the DRF view's answers, call by call: the same status, body and
headers for successes, rejected items, conflicts, errors while storing and the throttle; and
everything it does not answer falls through, unchanged, before any effect."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError
from django.test import RequestFactory

from tests.conftest import event
from usage import apis
from usage.models import UsageEvent
from workspaces.services import api_key_create

pytestmark = pytest.mark.django_db

VIEW = apis.EventIngestApi.as_view()
HEADERS = ("Content-Type", "Allow", "Retry-After", "Vary", "WWW-Authenticate", "Content-Length")


def answer(view, secret, body, **extra):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = RequestFactory().generic(
        "POST", "/api/v1/events", raw, content_type=extra.pop("content_type", "application/json"),
        HTTP_AUTHORIZATION=f"Bearer {secret}", **extra,
    )  # fmt: skip
    response = view(request)
    if hasattr(response, "render"):
        response.render()
    headers = {name: response.get(name) for name in HEADERS}
    return response.status_code, json.loads(response.content) if response.content else None, headers


@pytest.fixture
def secret(workspace):
    return api_key_create(workspace=workspace, name="fast").secret


def renamed(body, suffix):
    """The same events under other event ids (so that both views store them anew)."""
    def one(e):
        return {**e, "event_id": f"{e['event_id']}{suffix}"} if isinstance(e, dict) and "event_id" in e else e

    if isinstance(body, dict) and "events" in body:
        return {"events": [one(e) for e in body["events"]]}
    return [one(e) for e in body] if isinstance(body, list) else one(body)


def normalised(result, suffix):
    status, body, headers = result
    text = json.dumps(body).replace(suffix, "")
    return status, json.loads(text), headers


BODIES = {
    "one event": lambda: event(event_id="one"),
    "a list": lambda: [event(event_id="l-1"), event(event_id="l-2", feature="upscaling", model=..., steps=...,
                                                   width=..., height=...)],
    "a batch with a rejected item": lambda: {"events": [event(event_id="r-1"), event(event_id="r-2", steps=0)]},
    "a repeat inside the batch, changed": lambda: {"events": [event(event_id="c"), event(event_id="c", steps=50)]},
    "unicode": lambda: event(event_id="ünï\u2028cødé", metadata={"p": "line\u2029sep 😀"}),
}


@pytest.mark.parametrize("name", BODIES)
def test_new_and_repeated_events_are_answered_as_the_drf_view_answers(secret, name):
    body = BODIES[name]()
    fast = answer(VIEW, secret, renamed(body, "-F"))
    drf = answer(VIEW.drf_view, secret, renamed(body, "-D"))
    assert normalised(fast, "-F") == normalised(drf, "-D")
    assert fast[0] == 200
    # Sent again: duplicates (and conflicts), through either view.
    again_fast = answer(VIEW, secret, renamed(body, "-D"))
    again_drf = answer(VIEW.drf_view, secret, renamed(body, "-F"))
    assert normalised(again_fast, "-D") == normalised(again_drf, "-F")
    assert again_fast[1]["accepted"] == 0


@pytest.mark.parametrize(
    ("name", "body", "extra"),
    [
        ("indented JSON asked for", event(event_id="i"), {"HTTP_ACCEPT": "application/json; indent=4"}),
        ("HTML asked for", event(event_id="h"), {"HTTP_ACCEPT": "text/html"}),
        ("not JSON", b"{nope", {}),
        ("a key twice", b'{"event_id": "a", "event_id": "b"}', {}),
        ("empty batch", {"events": []}, {}),
        ("too many", {"events": [event() for _ in range(1_001)]}, {}),
        ("wrong type", event(), {"content_type": "text/plain"}),
        ("a number", 5, {}),
    ],
)
def test_what_the_fast_path_does_not_answer_falls_through_unchanged(secret, name, body, extra):
    assert apis.fast_ingest(RequestFactory().generic(
        "POST", "/api/v1/events", body if isinstance(body, bytes) else json.dumps(body).encode(),
        content_type=extra.get("content_type", "application/json"), HTTP_AUTHORIZATION=f"Bearer {secret}",
        **{k: v for k, v in extra.items() if k != "content_type"},
    )) is None  # fmt: skip
    fast = answer(VIEW, secret, renamed(body, "-F"), **dict(extra))
    drf = answer(VIEW.drf_view, secret, renamed(body, "-D"), **dict(extra))
    assert normalised(fast, "-F") == normalised(drf, "-D")


def test_unknown_keys_and_missing_scopes_fall_through(workspace):
    reader = api_key_create(workspace=workspace, name="reader", scopes=["usage:read"]).secret
    for secret in (reader, "mbk_000000000000_unknown", ""):
        assert answer(VIEW, secret, event()) == answer(VIEW.drf_view, secret, event())
    assert not UsageEvent.objects.filter(workspace=workspace).exists()


def test_an_error_while_storing_is_answered_as_the_drf_view_answers(secret, monkeypatch):
    def outage(**kwargs):
        raise OperationalError("connection lost")

    monkeypatch.setattr(apis, "events_ingest", outage)
    fast = answer(VIEW, secret, event(event_id="x"))
    assert fast == answer(VIEW.drf_view, secret, event(event_id="x"))
    assert fast[0] == 503 and fast[2]["Retry-After"]


def test_a_throttled_call_is_counted_once_and_refused_as_the_drf_view_refuses(secret, settings, monkeypatch):
    from workspaces import throttling

    settings.API_RATE_PER_KEY = "2/min"
    counted = []
    real = throttling._incr
    monkeypatch.setattr(throttling, "_incr", lambda key, amount, ttl: counted.append(amount) or real(key, amount, ttl))
    assert answer(VIEW, secret, event())[0] == 200
    assert answer(VIEW, secret, event())[0] == 200
    refused = answer(VIEW, secret, event())
    assert refused[0] == 429 and 0 < int(refused[2]["Retry-After"]) <= 60
    assert sum(counted) == 3  # three calls, three counts: the fall-through did not count again
    assert refused[1] == answer(VIEW.drf_view, secret, event())[1]


def test_the_common_call_is_answered_by_the_fast_path(secret, workspace):
    """Not a fall-through: a single event and a batch with a Bearer key are answered by
    fast_ingest itself, and stored."""
    for body in (event(event_id="f-1"), {"events": [event(event_id="f-2"), event(event_id="f-3")]}):
        request = RequestFactory().post(
            "/api/v1/events", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
        )
        response = apis.fast_ingest(request)
        assert response is not None and response.status_code == 200
    assert UsageEvent.objects.filter(workspace=workspace).count() == 3
