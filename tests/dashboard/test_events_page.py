"""The events page: recent events with each endpoint's delivery status and payload, a replay
(owners and admins), endpoints added (secret shown once) and deleted; other workspaces' events
and endpoints are out of reach."""

from __future__ import annotations

import pytest

import notifications
from notifications.models import Endpoint, EventDelivery
from notifications.services import endpoint_create


@pytest.fixture(autouse=True)
def _local_webhooks(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True


def statement_event(workspace, key="1"):
    return notifications.publish(workspace.pk, "statement.finalized", {"statement_id": int(key), "total": "4.880000"}, key=key)


def test_events_are_listed_with_their_deliveries_and_payload(client, owner, workspace, other_workspace):
    hook = endpoint_create(workspace_id=workspace.pk, url="http://127.0.0.1:9/hook").endpoint
    event = statement_event(workspace)
    EventDelivery.objects.filter(event=event).update(status="failed", attempts=12, last_error="Answered HTTP 500")
    theirs = statement_event(other_workspace, key="2")
    client.force_login(owner)
    page = client.get("/events/").content.decode()
    assert 'aria-current="page">Events</a>' in page
    assert event.id in page and "statement.finalized" in page and "4.880000" in page
    assert f"{hook.url}: failed (gave up) (12 attempts)" in page and "Answered HTTP 500" in page
    assert theirs.id not in page
    assert "Replay" in page
    assert "Events are kept 30 days, then deleted with their deliveries." in page
    only = client.get("/events/?type=payment.failed").content.decode()
    assert event.id not in only


def test_an_owner_adds_an_endpoint_sees_its_secret_once_and_deletes_it(client, owner, workspace):
    client.force_login(owner)
    response = client.post("/events/endpoints/new/", {"url": "http://127.0.0.1:9/e", "event_types": ["payment.failed"]})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    endpoint = Endpoint.objects.get(workspace=workspace)
    assert endpoint.event_types == ["payment.failed"] and endpoint.secret in response.content.decode()
    assert endpoint.secret not in client.get("/events/").content.decode()
    bad = client.post("/events/endpoints/new/", {"url": "ftp://x", "event_types": ["*"]})
    assert bad.status_code == 400 and "Must start with https://" in bad.content.decode()
    assert client.post(f"/events/endpoints/{endpoint.pk}/delete/").status_code == 302
    assert not Endpoint.objects.exists()


def test_a_replay_queues_a_new_delivery_of_the_same_event(client, admin_user, workspace):
    hook = endpoint_create(workspace_id=workspace.pk, url="http://127.0.0.1:9/hook").endpoint
    event = statement_event(workspace)
    client.force_login(admin_user)
    assert client.post(f"/events/{event.id}/replay/", {"endpoint": hook.pk}).status_code == 302
    assert list(EventDelivery.objects.filter(event=event).values_list("replay", "status")) == [(False, "pending"), (True, "pending")]
    # A paused endpoint is refused, saying why (the replay would wait unsent).
    Endpoint.objects.filter(pk=hook.pk).update(active=False)
    page = client.post(f"/events/{event.id}/replay/", {"endpoint": hook.pk}, follow=True).content.decode()
    assert "This endpoint is paused" in page and f"{hook.url} (paused)" in page
    assert EventDelivery.objects.filter(event=event).count() == 2


def test_viewers_only_read_and_other_workspaces_are_out_of_reach(client, viewer, other_owner, workspace):
    hook = endpoint_create(workspace_id=workspace.pk, url="http://127.0.0.1:9/hook").endpoint
    event = statement_event(workspace)
    client.force_login(viewer)
    page = client.get("/events/").content.decode()
    assert event.id in page and "Replay" not in page.split('id="events-table"')[1].split("<p class")[0]
    assert client.post(f"/events/{event.id}/replay/", {"endpoint": hook.pk}).status_code == 403
    assert client.post(f"/events/endpoints/{hook.pk}/delete/").status_code == 403
    client.force_login(other_owner)
    assert event.id not in client.get("/events/").content.decode()
    assert client.post(f"/events/{event.id}/replay/", {"endpoint": hook.pk}).status_code == 404
    assert client.post(f"/events/endpoints/{hook.pk}/delete/").status_code == 404
    assert client.post(f"/events/{event.id}/replay/", {"endpoint": "9" * 30}).status_code == 404
    assert EventDelivery.objects.count() == 1 and Endpoint.objects.count() == 1
