"""The event stream's API: webhook endpoints, the events log and the event types, each scoped to
the caller's workspace and checked against the served OpenAPI schema (SchemaCheckedClient)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import notifications
from notifications.models import Endpoint
from notifications.schemas import EVENT_TYPES, SCHEMAS
from tests.conftest import client_with
from workspaces.models import Scope
from workspaces.services import api_key_create

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_an_endpoint_is_created_with_its_secret_shown_once_then_changed_and_deleted(api, allow_private):
    created = api.post("/api/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/hook",
                       "event_types": ["payment.failed", "statement.finalized"]}, format="json")  # fmt: skip
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["secret"] == Endpoint.objects.get().secret
    assert body["event_types"] == ["statement.finalized", "payment.failed"]  # the registry's order
    assert body["active"] is True
    [listed] = api.get("/api/v1/webhook-endpoints").json()
    assert listed["secret"] is None and listed["id"] == body["id"]
    path = f"/api/v1/webhook-endpoints/{body['id']}"
    assert api.get(path).json()["secret"] is None
    changed = api.patch(path, {"event_types": ["*"], "active": False, "description": "ops"}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["event_types"], changed.json()["active"], changed.json()["description"]) == (["*"], False, "ops")
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404 and not Endpoint.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"url": "http://127.0.0.1/hook"}, "url"),  # loopback: refused unless WEBHOOK_ALLOW_PRIVATE
        ({"url": "ftp://hooks.example.com/"}, "url"),
        ({"url": "https://hooks.example.com/", "event_types": ["statement.closed"]}, "event_types"),
        ({"url": "https://hooks.example.com/", "event_types": []}, "event_types"),
        ({"url": "https://hooks.example.com/", "event_types": "payment.failed"}, "event_types"),
        ({"url": "https://hooks.example.com/", "active": "perhaps"}, "active"),
        ({"url": "https://hooks.example.com/", "secret": "mine"}, "secret"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, body, field):
    answer = api.post("/api/v1/webhook-endpoints", body, format="json")
    assert answer.status_code == 400, answer.content
    assert field in answer.json(), answer.json()
    assert not Endpoint.objects.exists()


def test_another_workspace_sees_none_of_them(api, other_api, allow_private):
    endpoint_id = api.post("/api/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/"}, format="json").json()["id"]
    path = f"/api/v1/webhook-endpoints/{endpoint_id}"
    assert other_api.get("/api/v1/webhook-endpoints").json() == []
    assert other_api.get(path).status_code == 404
    assert other_api.patch(path, {"active": False}, format="json").status_code == 404
    assert other_api.delete(path).status_code == 404
    assert Endpoint.objects.get().active is True


def test_writes_need_budgets_write_and_reads_usage_read(workspace, allow_private):
    reader = client_with(api_key_create(workspace=workspace, name="r", scopes=[Scope.USAGE_READ]).secret)
    writer = client_with(api_key_create(workspace=workspace, name="w", scopes=[Scope.BUDGETS_WRITE]).secret)
    assert reader.post("/api/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/"}, format="json").status_code == 403
    assert writer.post("/api/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/"}, format="json").status_code == 201
    assert reader.get("/api/v1/webhook-endpoints").status_code == 200
    assert writer.get("/api/v1/events-log").status_code == 403


def _publish(workspace, n: int, event_type: str = "statement.finalized", start: int = 0):
    return [
        notifications.publish(workspace.pk, event_type, {"statement_id": i}, key=f"{event_type}:{i}", created=T0 + timedelta(minutes=i))
        for i in range(start, start + n)
    ]


def test_the_events_log_pages_in_created_order_after_a_cursor(api, workspace, other_workspace):
    late = _publish(workspace, 1, start=10)  # published first, created later
    early = _publish(workspace, 3)
    payments = _publish(workspace, 2, "payment.failed", start=20)
    _publish(other_workspace, 2)
    first = api.get("/api/v1/events-log?limit=2").json()
    assert [e["id"] for e in first["data"]] == [early[0].id, early[1].id]
    assert first["has_more"] is True and first["next_after"] == early[1].id
    assert first["data"][0] == {"id": early[0].id, "type": "statement.finalized", "version": 1,
                                "created": "2026-11-01T00:00:00Z", "data": {"statement_id": 0}}  # fmt: skip
    rest = api.get(f"/api/v1/events-log?after={first['next_after']}").json()
    assert [e["id"] for e in rest["data"]] == [early[2].id, late[0].id, payments[0].id, payments[1].id]
    assert rest["has_more"] is False
    caught_up = api.get(f"/api/v1/events-log?after={payments[1].id}").json()
    assert caught_up == {"data": [], "has_more": False, "next_after": payments[1].id}
    only = api.get("/api/v1/events-log?type=payment.failed").json()
    assert [e["id"] for e in only["data"]] == [p.id for p in payments]


def test_the_events_log_refuses_a_cursor_it_cannot_follow(api, other_workspace):
    theirs = _publish(other_workspace, 1)[0]
    answer = api.get(f"/api/v1/events-log?after={theirs.id}")
    assert answer.status_code == 400 and "after" in answer.json()
    for query in ("after=nope", "limit=0", "limit=501", "type=statement.closed", "since=1"):
        answer = api.get(f"/api/v1/events-log?{query}")
        assert answer.status_code == 400, (query, answer.content)


def test_event_types_are_served_with_their_schemas(api):
    served = api.get("/api/v1/event-types").json()
    assert [(t["type"], t["version"]) for t in served] == list(SCHEMAS)
    assert {t["type"] for t in served} == set(EVENT_TYPES) == {
        "budget.threshold_crossed", "budget.forecast_exceeded", "usage.anomaly", "credits.low", "credits.recharged", "credits.recharge_failed",
        "statement.finalized", "payment.succeeded", "payment.failed", "invoice.created",
    }  # fmt: skip
    finalized = next(t for t in served if t["type"] == "statement.finalized")
    assert finalized["schema"]["properties"]["total"]["pattern"] and finalized["current"] is True
