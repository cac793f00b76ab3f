"""Worker deaths (issue 10, finding 4), with real processes: this test's own Celery workers and
beat on the suite's broker and test database, with the production timings (5 s webhook deadline,
the beat's schedule from config/schedule.py), one of them killed with SIGKILL (the process and its
pool at once, as a lost machine). A replacement is started right after, as a supervisor would.

Each alert must arrive within 2 minutes of the event that crossed its threshold. Before the fix,
it took 7.5 to 9.8 minutes: the retry's countdown and the tasks a worker had taken died with it,
and only a sweep every 5 minutes of deliveries 5 minutes overdue brought them back; an evaluation
taken by the dying worker left its "pending" mark for 5 minutes."""

from __future__ import annotations

import re
import time

import pytest

from budgets import counters
from budgets.models import AlertDelivery
from tests.budgets.conftest import spend_events, wait_until
from tests.conftest import client_with, post_events
from workspaces.services import api_key_create, workspace_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
RECOVER_WITHIN = 120  # seconds from the crossing event to the alert at its webhook


@pytest.fixture
def acme(allow_private):
    workspace = workspace_create(slug="acme", owner_email="owner@acme.test", name="Acme")
    return workspace, client_with(api_key_create(workspace=workspace, name="generator").secret)


def budget(api, url: str) -> dict:
    body = {"amount": "10", "thresholds": [100], "forecast_alerts": False, "email": False, "webhooks": [{"url": url}]}
    response = api.post("/api/v1/budgets", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def cross(api) -> float:
    """Send the event that takes spend to 100 %: when it was sent (time.time())."""
    sent = time.time()
    post_events(api, spend_events(10))
    return sent


def the_webhook_delivery() -> AlertDelivery:
    return wait_until(lambda: AlertDelivery.objects.filter(channel="webhook").first(), what="the delivery")


def attempts(delivery: AlertDelivery) -> list[tuple[int, str]]:
    return list(delivery.attempt_log.values_list("number", "outcome"))


def test_a_worker_killed_mid_post_sends_the_alert_again_within_2_minutes_with_the_same_delivery_id(
    acme, receiver, fleet
):
    workspace, api = acme
    fleet.worker("celery")
    webhooks = fleet.worker("webhooks", concurrency=4)
    fleet.beat()
    created = budget(api, receiver.url("/hold-once"))
    crossing = cross(api)
    receiver.wait_for("/hold-once", 1, seconds=30)  # the POST is in flight: the receiver holds it
    webhooks.kill()
    receiver.release()
    fleet.worker("webhooks", concurrency=4, ready=False)
    first, second = receiver.wait_for("/hold-once", 2, seconds=RECOVER_WITHIN + 10)
    delay = second.at - crossing
    print(f"\nkilled mid-POST: first POST {first.at - crossing:.1f} s, delivered {delay:.1f} s after the crossing")
    assert delay <= RECOVER_WITHIN
    # At least once: the receiver saw it twice, the same delivery (its id to drop the duplicate).
    assert first.headers["Meterboard-Delivery"] == second.headers["Meterboard-Delivery"]
    secret = created["webhooks"][0]["secret"]
    assert [body["id"] for body in receiver.verified("/hold-once", secret)] == [first.json["id"]] * 2
    delivery = the_webhook_delivery()
    assert first.headers["Meterboard-Delivery"] == str(delivery.pk)
    wait_until(lambda: AlertDelivery.objects.get(pk=delivery.pk).status == "delivered", what="delivered")
    assert attempts(delivery) == [(1, "abandoned"), (2, "ok")]
    time.sleep(2)
    assert len(receiver.on("/hold-once")) == 2  # twice in all


def test_a_worker_killed_holding_the_crossings_evaluation_still_alerts_within_2_minutes(acme, receiver, fleet):
    workspace, api = acme
    default = fleet.worker("celery")
    fleet.worker("webhooks", concurrency=4)
    fleet.beat()
    created = budget(api, receiver.url("/hook"))
    default.wait_for(r"workspace_evaluate\[\S+\] succeeded")  # the new budget's evaluation
    # Not at a minute's turn: the beat's every-minute jobs would fill the worker's prefetch (2)
    # before the evaluation comes, and it would stay in the queue for the replacement.
    while not 3 <= time.time() % 60 <= 50:
        time.sleep(0.5)
    received = r"workspace_evaluate\[\S+\] received"
    taken = len(re.findall(received, default.text()))
    default.freeze_pool()
    crossing = cross(api)
    # The worker took the crossing's evaluation (the one task it may take beside a sweep), and
    # dies before it starts: the workspace's "evaluation pending" mark stays behind.
    default.wait_for(received, count=taken + 1, seconds=10)
    default.kill()
    if counters._backend() is not None:
        _, _, pending = counters._keys(workspace.pk)
        assert counters._backend().client.exists(pending)
    fleet.worker("celery", ready=False)
    [alert] = receiver.wait_for("/hook", 1, seconds=RECOVER_WITHIN + 10)
    delay = alert.at - crossing
    print(f"\nkilled holding the evaluation: delivered {delay:.1f} s after the crossing")
    assert delay <= RECOVER_WITHIN
    assert alert.json["threshold"] == 100 and receiver.verified("/hook", created["webhooks"][0]["secret"])
    time.sleep(2)
    assert len(receiver.on("/hook")) == 1


def test_a_retry_due_while_its_worker_is_dead_goes_on_time_from_the_database(acme, receiver, fleet):
    workspace, api = acme
    fleet.worker("celery")
    webhooks = fleet.worker("webhooks", concurrency=4)
    fleet.beat()
    budget(api, receiver.url("/fail-once"))
    crossing = cross(api)
    receiver.wait_for("/fail-once", 1, seconds=30)  # answered 500
    delivery = the_webhook_delivery()
    wait_until(lambda: AlertDelivery.objects.get(pk=delivery.pk).status == "retrying", what="the retry scheduled")
    webhooks.kill()  # it would have held the retry's 30 s countdown
    fleet.worker("webhooks", concurrency=4, ready=False)
    first, second = receiver.wait_for("/fail-once", 2, seconds=RECOVER_WITHIN + 10)
    print(f"\nretry with its worker dead: {second.at - first.at:.1f} s after the failed attempt, "
          f"delivered {second.at - crossing:.1f} s after the crossing")  # fmt: skip
    assert 29.5 <= second.at - first.at <= 40  # on the schedule's 30 s
    assert second.at - crossing <= RECOVER_WITHIN
    assert first.headers["Meterboard-Delivery"] == second.headers["Meterboard-Delivery"] == str(delivery.pk)
    wait_until(lambda: AlertDelivery.objects.get(pk=delivery.pk).status == "delivered", what="delivered")
    assert attempts(delivery) == [(1, "http_error"), (2, "ok")]
