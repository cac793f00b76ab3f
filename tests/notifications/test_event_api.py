"""GET /api/v1/events/<id> (the event and its deliveries) and POST /api/v1/events/<id>/replay (one
more delivery to one endpoint), through the real API client (answers checked against the served
OpenAPI schema), with a local HTTP receiver: scoped to the caller's workspace both ways, bad input
a 400 per field, and replays for budgets:write keys and owners' and admins' sessions only."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import notifications
from notifications import delivery
from notifications.models import Endpoint, EventDelivery
from tests.conftest import SchemaCheckedClient, client_with
from tests.dashboard.conftest import person
from workspaces.models import Membership, Scope
from workspaces.services import api_key_create

CREATED = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def no_worker(monkeypatch):
    """Deliveries are attempted below by calling notifications.delivery (no worker here)."""
    monkeypatch.setattr(delivery, "endpoint_enqueue", lambda endpoint_id, countdown=0: None)


def statement_event(workspace, key="41"):
    return notifications.publish(
        workspace.pk, "statement.finalized", {"statement_id": int(key)}, key=key, created=CREATED
    )


def new_endpoint(workspace, url: str, active: bool = True) -> Endpoint:
    return Endpoint.objects.create(
        workspace=workspace, url=url, secret="whsec_x", event_types=["*"], active=active
    )


def session(user) -> SchemaCheckedClient:
    client = SchemaCheckedClient()
    client.force_login(user)
    return client


def test_a_replay_is_one_new_delivery_that_the_endpoint_receives_signed(
    api, workspace, receiver, allow_private
):
    event = statement_event(workspace)  # before the endpoint: it was never sent there
    created = api.post("/api/v1/webhook-endpoints", {"url": receiver.url("/hook")}, format="json").json()

    answer = api.post(f"/api/v1/events/{event.id}/replay", {"endpoint": created["id"]}, format="json")

    assert answer.status_code == 202, answer.content
    replay = EventDelivery.objects.get()
    assert answer.json() == {
        "id": f"evd_{replay.pk}", "event": event.id, "endpoint": created["id"], "status": "pending", "replay": True,
        "attempts": 0, "next_attempt_at": answer.json()["next_attempt_at"], "delivered_at": None, "last_error": "",
        "created_at": answer.json()["created_at"],
    }  # fmt: skip
    assert delivery.endpoint_deliver(created["id"]) == "delivered"
    [body] = receiver.verified("/hook", created["secret"])
    assert body == event.payload()
    assert receiver.on("/hook")[0].headers["Meterboard-Delivery"] == f"evd_{replay.pk}"

    detail = api.get(f"/api/v1/events/{event.id}").json()
    assert {key: detail[key] for key in ("id", "type", "version", "created", "data")} == event.payload()
    [listed] = detail["deliveries"]
    assert (listed["id"], listed["endpoint"], listed["status"], listed["replay"], listed["attempts"]) == (
        f"evd_{replay.pk}", created["id"], "delivered", True, 1
    )  # fmt: skip
    assert listed["delivered_at"] is not None and listed["next_attempt_at"] is None


def test_an_event_lists_every_delivery_in_the_order_they_are_made(api, workspace):
    first = new_endpoint(workspace, "https://a.example.com/")
    second = new_endpoint(workspace, "https://b.example.com/")
    event = statement_event(workspace)
    EventDelivery.objects.filter(endpoint=first).update(
        status="failed", attempts=12, last_error="Answered HTTP 500"
    )
    replayed = api.post(f"/api/v1/events/{event.id}/replay", {"endpoint": first.pk}, format="json").json()
    deliveries = api.get(f"/api/v1/events/{event.id}").json()["deliveries"]
    assert [(d["endpoint"], d["status"], d["replay"]) for d in deliveries] == [
        (first.pk, "failed", False), (second.pk, "pending", False), (first.pk, "pending", True)
    ]  # fmt: skip
    assert deliveries[0]["last_error"] == "Answered HTTP 500" and deliveries[2]["id"] == replayed["id"]


def test_another_workspace_s_events_and_endpoints_are_out_of_reach_both_ways(
    api, other_api, workspace, other_workspace
):
    mine = statement_event(workspace)
    my_endpoint = new_endpoint(workspace, "https://a.example.com/")
    theirs = statement_event(other_workspace)
    their_endpoint = new_endpoint(other_workspace, "https://b.example.com/")
    before = EventDelivery.objects.count()

    # They cannot read or replay my event, to their endpoint or mine.
    assert other_api.get(f"/api/v1/events/{mine.id}").status_code == 404
    for target in (their_endpoint, my_endpoint):
        answer = other_api.post(f"/api/v1/events/{mine.id}/replay", {"endpoint": target.pk}, format="json")
        assert answer.status_code == 404, answer.content
    # Nor I theirs; and my event to their endpoint is an unknown endpoint (whether it exists or not).
    assert api.get(f"/api/v1/events/{theirs.id}").status_code == 404
    assert (
        api.post(
            f"/api/v1/events/{theirs.id}/replay", {"endpoint": my_endpoint.pk}, format="json"
        ).status_code
        == 404
    )
    answer = api.post(f"/api/v1/events/{mine.id}/replay", {"endpoint": their_endpoint.pk}, format="json")
    assert answer.status_code == 400
    assert answer.json() == {"endpoint": ["No such webhook endpoint in this workspace."]}
    assert EventDelivery.objects.count() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "endpoint"),
        ({"endpoint": None}, "endpoint"),
        ({"endpoint": "first"}, "endpoint"),
        ({"endpoint": 0}, "endpoint"),
        ({"endpoint": 2**63}, "endpoint"),
        ({"endpoint": 987654}, "endpoint"),  # no such endpoint
        ({"endpoint": "{mine}", "url": "https://x.example.com/"}, "url"),  # an unknown field
        ({"endpoint": "{paused}"}, "endpoint"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, workspace, body, field):
    event = statement_event(workspace)
    ids = {
        "{mine}": new_endpoint(workspace, "https://a.example.com/").pk,
        "{paused}": new_endpoint(workspace, "https://b.example.com/", active=False).pk,
    }
    body = {key: ids.get(value, value) if isinstance(value, str) else value for key, value in body.items()}
    before = EventDelivery.objects.count()
    answer = api.post(f"/api/v1/events/{event.id}/replay", body, format="json")
    assert answer.status_code == 400, answer.content
    assert list(answer.json()) == [field], answer.json()
    assert EventDelivery.objects.count() == before


def test_a_paused_endpoint_is_refused_with_what_to_do(api, workspace):
    event = statement_event(workspace)
    paused = new_endpoint(workspace, "https://a.example.com/", active=False)
    answer = api.post(f"/api/v1/events/{event.id}/replay", {"endpoint": paused.pk}, format="json")
    assert answer.json() == {
        "endpoint": ["This endpoint is paused: resume it (active: true) to replay events to it."]
    }


@pytest.mark.parametrize(
    "event_id", ["nope", "evt_01kb3y6d0g8r1zq0j7g8wfx2mn", "evt_" + "0" * 25, "evt_" + "9" * 40]
)
def test_an_unknown_event_id_is_a_404(api, workspace, event_id):
    target = new_endpoint(workspace, "https://a.example.com/")
    answer = api.get(f"/api/v1/events/{event_id}")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "No such event in this workspace (events are kept 30 days)."}
    assert (
        api.post(f"/api/v1/events/{event_id}/replay", {"endpoint": target.pk}, format="json").status_code
        == 404
    )


def test_replays_need_budgets_write_or_an_owner_or_admin_and_reads_usage_read(workspace):
    event = statement_event(workspace)
    target = new_endpoint(workspace, "https://a.example.com/")
    path, body = f"/api/v1/events/{event.id}/replay", {"endpoint": target.pk}
    reader = client_with(api_key_create(workspace=workspace, name="r", scopes=[Scope.USAGE_READ]).secret)
    writer = client_with(api_key_create(workspace=workspace, name="w", scopes=[Scope.BUDGETS_WRITE]).secret)
    viewer = session(person("viewer@acme.test", workspace=workspace, role=Membership.Role.VIEWER))
    admin = session(person("admin@acme.test", workspace=workspace, role=Membership.Role.ADMIN))

    assert reader.post(path, body, format="json").status_code == 403
    refused = viewer.post(path, body, format="json")
    assert refused.status_code == 403 and refused.json() == {
        "detail": "Only the workspace's owners and admins may do this."
    }
    assert EventDelivery.objects.filter(replay=True).count() == 0
    assert writer.post(path, body, format="json").status_code == 202
    assert admin.post(path, body, format="json").status_code == 202
    assert EventDelivery.objects.filter(replay=True).count() == 2
    # Reading the event: usage:read, or any member.
    assert reader.get(f"/api/v1/events/{event.id}").status_code == 200
    assert viewer.get(f"/api/v1/events/{event.id}").status_code == 200
    assert writer.get(f"/api/v1/events/{event.id}").status_code == 403
