"""Delivering events to workspace endpoints, in process against a local HTTP receiver: signed like
budget webhooks, one at a time per endpoint in `created` order, a failing head holding the ones
behind it, retries for 24 hours, the sweep, and manual replays."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import notifications
from core.webhooks import RETRY_WINDOW, signature_verify
from notifications import delivery
from notifications.models import Endpoint, EventDelivery
from notifications.services import endpoint_create, event_replay

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[int, float]]:
    """The tasks delivery asks for (no worker here): (endpoint id, countdown)."""
    calls = []
    monkeypatch.setattr(delivery, "endpoint_enqueue", lambda endpoint_id, countdown=0: calls.append((endpoint_id, countdown)))
    return calls


def endpoint(workspace, receiver, path: str, types=("*",)):
    issued = endpoint_create(workspace_id=workspace.pk, url=receiver.url(path), event_types=types)
    return issued.endpoint


def publish(workspace, n: int, *, minutes=None):
    minutes = minutes or list(range(n))
    return [
        notifications.publish(workspace.pk, "payment.failed", {"statement_id": m}, key=f"k{m}", created=T0 + timedelta(minutes=m))
        for m in minutes
    ]


def bodies(receiver, path, secret) -> list[dict]:
    return receiver.verified(path, secret)


def test_events_are_sent_signed_one_at_a_time_in_created_order(workspace, receiver, allow_private, enqueued):
    hook = endpoint(workspace, receiver, "/hook")
    events = publish(workspace, 3, minutes=[5, 1, 3])  # published out of order
    now = datetime.now(timezone.utc)
    assert [delivery.endpoint_deliver(hook.pk, now=now) for _ in range(4)] == ["delivered"] * 3 + ["idle"]
    received = bodies(receiver, "/hook", hook.secret)  # each signature checked
    assert [body["id"] for body in received] == [events[1].id, events[2].id, events[0].id]
    assert received[0] == {"id": events[1].id, "type": "payment.failed", "version": 1,
                           "created": "2026-11-01T00:01:00Z", "data": {"statement_id": 1}}  # fmt: skip
    headers = receiver.on("/hook")[0].headers
    assert headers["Meterboard-Event"] == "payment.failed" and headers["Meterboard-Event-Id"] == events[1].id
    assert headers["Meterboard-Delivery"].startswith("evd_")
    assert enqueued == [(hook.pk, 0)] * 3  # each delivered one asks for the next at once
    assert set(EventDelivery.objects.values_list("status", "attempts")) == {("delivered", 1)}


def test_a_failing_event_holds_the_ones_behind_it_until_it_is_delivered(workspace, receiver, allow_private, enqueued):
    hook = endpoint(workspace, receiver, "/flaky")
    receiver.flaky_failures = 2
    events = publish(workspace, 3)
    now = datetime.now(timezone.utc)
    assert delivery.endpoint_deliver(hook.pk, now=now) == "retrying"
    assert delivery.endpoint_deliver(hook.pk, now=now + timedelta(seconds=5)) == "idle"  # not due; nothing behind it goes
    assert len(receiver.on("/flaky")) == 1
    assert delivery.endpoint_deliver(hook.pk, now=now + timedelta(seconds=31)) == "retrying"  # 30 s later
    head = EventDelivery.objects.get(event=events[0])
    assert (head.status, head.attempts, head.next_attempt_at) == ("retrying", 2, now + timedelta(seconds=91))
    later = now + timedelta(seconds=92)
    assert [delivery.endpoint_deliver(hook.pk, now=later) for _ in range(3)] == ["delivered"] * 3
    ids = [body["id"] for body in bodies(receiver, "/flaky", hook.secret)]
    assert ids == [events[0].id] * 3 + [events[1].id, events[2].id]
    assert list(EventDelivery.objects.order_by("order_at").values_list("attempts", flat=True)) == [3, 1, 1]


def test_after_24_hours_of_failures_an_event_is_given_up_and_the_next_goes(workspace, receiver, allow_private, enqueued):
    hook = endpoint(workspace, receiver, "/fail")
    events = publish(workspace, 2)
    first = EventDelivery.objects.get(event=events[0])
    at = first.created_at
    outcomes = []
    while True:
        outcome = delivery.endpoint_deliver(hook.pk, now=at)
        outcomes.append(outcome)
        if outcome != "retrying":
            break
        at = EventDelivery.objects.get(pk=first.pk).next_attempt_at
    assert outcomes[-1] == "failed" and at - first.created_at <= RETRY_WINDOW
    first.refresh_from_db()
    assert first.status == "failed" and first.attempts == len(outcomes) > 8
    # The one behind it, older than 24 h by now, is still tried (never given up untried).
    assert delivery.endpoint_deliver(hook.pk, now=at) == "retrying"
    assert EventDelivery.objects.get(event=events[1]).attempts == 1


def test_the_sweep_enqueues_each_endpoint_whose_head_is_due_once(workspace, other_workspace, receiver, allow_private, enqueued):
    hook = endpoint(workspace, receiver, "/hook")
    quiet = endpoint(workspace, receiver, "/quiet", types=["invoice.created"])
    paused = endpoint(other_workspace, receiver, "/paused")
    Endpoint.objects.filter(pk=paused.pk).update(active=False)
    publish(workspace, 3)
    notifications.publish(other_workspace.pk, "payment.failed", {}, key="x")
    now = datetime.now(timezone.utc)
    assert delivery.endpoints_enqueue_due(now=now) == 1
    assert enqueued == [(hook.pk, 0)] and quiet.pk not in dict(enqueued)
    assert delivery.endpoints_enqueue_due(now=now + timedelta(seconds=5)) == 0  # a task is coming
    assert delivery.endpoints_enqueue_due(now=now + timedelta(seconds=31)) == 1  # that task was lost
    Endpoint.objects.filter(pk=hook.pk).update(claimed_until=now + timedelta(minutes=5))  # an attempt holds it
    assert delivery.endpoints_enqueue_due(now=now + timedelta(minutes=2)) == 0


def test_a_replay_sends_the_event_again_after_what_is_queued(workspace, other_workspace, receiver, allow_private, enqueued):
    hook = endpoint(workspace, receiver, "/hook")
    events = publish(workspace, 2)
    now = datetime.now(timezone.utc)
    assert delivery.endpoint_deliver(hook.pk, now=now) == "delivered"
    replay = event_replay(events[0], hook, now=now)
    assert [delivery.endpoint_deliver(hook.pk, now=now) for _ in range(3)] == ["delivered", "delivered", "idle"]
    ids = [body["id"] for body in bodies(receiver, "/hook", hook.secret)]
    assert ids == [events[0].id, events[1].id, events[0].id]  # out of created order: a manual replay
    replay.refresh_from_db()
    assert replay.replay and replay.status == "delivered"
    theirs = endpoint(other_workspace, receiver, "/theirs")
    with pytest.raises(Exception, match="another workspace"):
        event_replay(events[0], theirs)


def test_a_workspace_has_at_most_its_cap_of_attempts_in_flight(workspace, receiver, allow_private, enqueued, settings):
    settings.WEBHOOK_CONCURRENCY_PER_WORKSPACE = 1
    first, second = endpoint(workspace, receiver, "/a"), endpoint(workspace, receiver, "/b")
    publish(workspace, 1)
    now = datetime.now(timezone.utc)
    Endpoint.objects.filter(pk=first.pk).update(claimed_until=now + timedelta(seconds=20))  # sending
    assert delivery.endpoint_deliver(second.pk, now=now) == "deferred"
    assert receiver.on("/b") == [] and enqueued and enqueued[-1][0] == second.pk and enqueued[-1][1] > 0
    Endpoint.objects.filter(pk=first.pk).update(claimed_until=None)
    assert delivery.endpoint_deliver(second.pk, now=now) == "delivered"


def test_signatures_use_the_endpoints_own_secret(workspace, receiver, allow_private, enqueued):
    hook = endpoint(workspace, receiver, "/hook")
    publish(workspace, 1)
    delivery.endpoint_deliver(hook.pk, now=datetime.now(timezone.utc))
    [item] = receiver.on("/hook")
    assert signature_verify(hook.secret, item.headers["Meterboard-Signature"], item.body, now=item.at)
    assert not signature_verify("whsec_other", item.headers["Meterboard-Signature"], item.body, now=item.at)
