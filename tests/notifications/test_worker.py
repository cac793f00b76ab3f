"""End to end with real parts: the HTTP API creating endpoints, events published in a committed
transaction, the Procfile's Celery workers (tests/budgets/conftest.py `worker`) on the suite's
broker, and a local HTTP server verifying the signatures. A receiver that fails for a while and
recovers gets every event, at least once, in `created` order; the steady one is not held up."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from django.db import transaction
from django.utils import timezone as dj_timezone

import notifications
from notifications.delivery import endpoints_enqueue_due
from notifications.models import EventDelivery
from tests.budgets.conftest import wait_until
from tests.conftest import client_with
from workspaces.services import api_key_create, workspace_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def first_seen_order(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def test_every_event_arrives_in_order_at_a_receiver_that_fails_for_a_while(worker, receiver, allow_private):
    workspace = workspace_create(slug="acme", owner_email="owner@acme.test", name="Acme")
    api = client_with(api_key_create(workspace=workspace, name="ops").secret)
    secrets = {}
    for path in ("/hook", "/flaky"):
        created = api.post("/api/v1/webhook-endpoints", {"url": receiver.url(path)}, format="json")
        assert created.status_code == 201, created.content
        secrets[path] = created.json()["secret"]
    receiver.flaky_failures = 3  # the first three POSTs to /flaky answer 500
    with transaction.atomic():
        events = [
            notifications.publish(workspace.pk, "payment.failed", {"statement_id": n}, key=str(n),
                                  created=T0 + timedelta(minutes=(n * 5) % 6))  # fmt: skip
            for n in range(6)
        ]
    in_order = [event.id for event in sorted(events, key=lambda e: (e.created, e.id))]

    steady = receiver.wait_for("/hook", 6, seconds=60)
    assert [body["id"] for body in receiver.verified("/hook", secrets["/hook"])] == in_order
    assert len(steady) == 6  # a healthy receiver gets each once

    # The flaky one: its first event fails and is retried on the schedule (30 s, then 1 min...).
    # Rather than wait, each retry is brought forward in the database, where the schedule lives,
    # and the sweep (beat's job) is run here: the worker makes the attempts.
    def all_delivered() -> bool:
        flaky = EventDelivery.objects.filter(endpoint__url=receiver.url("/flaky"))
        flaky.filter(status="retrying").update(next_attempt_at=dj_timezone.now())
        endpoints_enqueue_due()
        time.sleep(0.3)
        return flaky.filter(status="delivered").count() == 6

    wait_until(all_delivered, seconds=90, what="every event delivered to /flaky")
    received = [body["id"] for body in receiver.verified("/flaky", secrets["/flaky"])]
    assert received[:4] == [in_order[0]] * 4  # failed three times, then delivered: nothing overtook it
    assert first_seen_order(received) == in_order  # never out of order, never lost
    assert set(received) == set(in_order)
    assert received == sorted(received, key=in_order.index)  # a repeat never comes after a later event
    assert EventDelivery.objects.get(event=events[0], endpoint__url=receiver.url("/flaky")).attempts == 4
