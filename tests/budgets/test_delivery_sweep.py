"""The delivery schedule lives in the database (issue 10, finding 4), in this process: each attempt
moves `next_attempt_at` as it starts, a failed attempt ends its task, and the sweep enqueues what
is due (with a countdown to its time), what a dead worker left claimed, and what a lost task never
claimed. The same with real workers killed: test_worker_faults.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from budgets import delivery as delivery_service
from budgets import tasks
from budgets.delivery import (
    CLAIM_MARGIN,
    LOST_AFTER,
    RETRY_WINDOW,
    SWEEP_EVERY,
    attempt_time_limit,
    deliveries_enqueue_due,
    delivery_attempt,
    delivery_requeue,
)
from budgets.models import AlertDelivery, DeliveryAttempt
from tests.budgets.test_delivery import NOW, crossing_alert, webhook_delivery


@pytest.fixture
def enqueued(monkeypatch):
    """What the sweep enqueues, instead of the broker: (delivery id, channel, countdown)."""
    calls: list[tuple[int, str, float]] = []
    monkeypatch.setattr(delivery_service, "delivery_enqueue", lambda pk, channel, countdown=0: calls.append((pk, channel, countdown)))
    return calls


def sweep(at, enqueued) -> list[tuple[int, str, float]]:
    enqueued.clear()
    count = deliveries_enqueue_due(now=at)
    assert count == len(enqueued)
    return list(enqueued)


def one_webhook(workspace, api_key, receiver, path="/hook") -> AlertDelivery:
    alert, _ = crossing_alert(workspace, api_key, urls=[receiver.url(path)], email=False)
    AlertDelivery.objects.exclude(alert=alert).delete()  # the free allowance's e-mail: not here
    return webhook_delivery(alert, receiver.url(path))


class WorkerKilled(BaseException):
    """The worker process dies here: nothing after this line of the attempt runs."""


def test_a_new_delivery_is_left_to_its_task_and_found_again_if_that_task_was_lost(
    workspace, api_key, receiver, allow_private, enqueued
):
    delivery = one_webhook(workspace, api_key, receiver)
    assert delivery.requeue_at == NOW + LOST_AFTER  # its task is enqueued after the commit
    assert sweep(NOW + timedelta(seconds=5), enqueued) == []  # the task is coming
    # 30 s and still unclaimed: the worker that took the task died (or the broker lost it).
    assert sweep(NOW + timedelta(seconds=31), enqueued) == [(delivery.pk, "webhook", 0)]
    delivery.refresh_from_db()
    assert (delivery.requeues, delivery.requeue_at) == (1, NOW + timedelta(seconds=31) + 2 * LOST_AFTER)
    assert sweep(NOW + timedelta(seconds=60), enqueued) == []
    # Lost again (no worker consumes the queue): each loss in a row doubles the wait.
    assert sweep(NOW + timedelta(seconds=92), enqueued) == [(delivery.pk, "webhook", 0)]
    delivery.refresh_from_db()
    assert (delivery.requeues, delivery.requeue_at) == (2, NOW + timedelta(seconds=92) + 4 * LOST_AFTER)
    # An attempt claims it: nothing is coming any more, and the count starts again.
    assert delivery_attempt(delivery.pk, now=NOW + timedelta(seconds=93)).status == "delivered"
    delivery.refresh_from_db()
    assert (delivery.requeues, delivery.requeue_at) == (0, None)
    assert sweep(NOW + timedelta(hours=1), enqueued) == []


def test_a_failed_attempt_ends_its_task_and_the_sweep_enqueues_the_retry_on_time(
    workspace, api_key, receiver, allow_private, enqueued
):
    delivery = one_webhook(workspace, api_key, receiver, "/fail")
    assert delivery_attempt(delivery.pk, now=NOW).retry_at == NOW + timedelta(seconds=30)
    assert sweep(NOW + timedelta(seconds=19), enqueued) == []  # due after the next sweep
    [(pk, channel, countdown)] = sweep(NOW + timedelta(seconds=21), enqueued)
    assert (pk, channel) == (delivery.pk, "webhook")
    assert 9 < countdown <= 9.5  # runs at NOW + 30 s, not a sweep later
    assert sweep(NOW + timedelta(seconds=25), enqueued) == []  # enqueued once
    assert delivery_attempt(delivery.pk, now=NOW + timedelta(seconds=30)).retry_at == NOW + timedelta(seconds=90)
    assert [a.outcome for a in DeliveryAttempt.objects.filter(delivery=delivery)] == ["http_error", "http_error"]


def test_the_delivery_task_holds_no_retry_in_the_worker(workspace, api_key, receiver, allow_private, enqueued):
    """It used to raise Celery's Retry (a countdown kept in the worker's memory, lost with it)."""
    delivery = one_webhook(workspace, api_key, receiver, "/fail")
    now = timezone.now()
    AlertDelivery.objects.filter(pk=delivery.pk).update(created_at=now, next_attempt_at=now)
    result = tasks.webhook_delivery_send.apply(args=[delivery.pk])
    assert (result.state, result.result) == ("SUCCESS", "retrying")
    assert len(receiver.on("/fail")) == 1 and enqueued == []
    delivery.refresh_from_db()
    assert delivery.status == "retrying" and delivery.next_attempt_at > now + timedelta(seconds=29)


def test_a_worker_killed_mid_attempt_frees_its_delivery_for_the_next_attempt_30_seconds_later(
    workspace, api_key, receiver, allow_private, enqueued, monkeypatch
):
    delivery = one_webhook(workspace, api_key, receiver)
    with monkeypatch.context() as patch:

        def killed(*args, **kwargs):
            raise WorkerKilled

        patch.setattr(delivery_service, "_send", killed)
        with pytest.raises(WorkerKilled):
            delivery_attempt(delivery.pk, now=NOW)
    delivery.refresh_from_db()
    claim = attempt_time_limit("webhook") + CLAIM_MARGIN
    assert claim == 25  # the default 5 s deadline, 15 s of overhead, 5 s of margin (it was 180 s)
    assert delivery.claimed_until == NOW + timedelta(seconds=claim)
    assert delivery.next_attempt_at == NOW + timedelta(seconds=30)  # set as the attempt began
    assert sweep(NOW + timedelta(seconds=20), enqueued) == []  # still held
    [(pk, _, countdown)] = sweep(NOW + timedelta(seconds=26), enqueued)
    assert pk == delivery.pk and 4 < countdown <= 4.5
    assert delivery_attempt(delivery.pk, now=NOW + timedelta(seconds=30)).status == "delivered"
    assert list(delivery.attempt_log.values_list("number", "outcome")) == [(1, "abandoned"), (2, "ok")]


def test_an_abandoned_last_attempt_fails_the_delivery_at_the_end_of_the_window(
    workspace, api_key, receiver, allow_private, monkeypatch
):
    delivery = one_webhook(workspace, api_key, receiver)
    last = delivery.created_at + RETRY_WINDOW - timedelta(seconds=10)
    AlertDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=last, attempts=30)
    monkeypatch.setattr(delivery_service, "_send", lambda *a, **k: (_ for _ in ()).throw(WorkerKilled))
    with pytest.raises(WorkerKilled):
        delivery_attempt(delivery.pk, now=last)
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == delivery.created_at + RETRY_WINDOW  # not past the window
    assert delivery_attempt(delivery.pk, now=delivery.created_at + RETRY_WINDOW).status == "skipped"  # held
    assert delivery_attempt(delivery.pk, now=last + timedelta(seconds=26)).status == "skipped"  # freed: given up
    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at, delivery.claimed_until) == ("failed", None, None)
    assert delivery.last_error == "The worker stopped during the last attempt."
    assert delivery.attempt_log.get().outcome == "abandoned"
    assert receiver.on("/hook") == []


def test_a_deferred_delivery_is_not_taken_for_lost_before_its_time(
    workspace, api_key, receiver, allow_private, enqueued
):
    delivery = one_webhook(workspace, api_key, receiver)
    AlertDelivery.objects.filter(pk=delivery.pk).update(requeue_at=None)  # its first task ran
    delivery_requeue(delivery.pk, "webhook", NOW + timedelta(seconds=4), now=NOW)
    [(_, _, countdown)] = enqueued
    assert 4 < countdown <= 4.5
    assert sweep(NOW + timedelta(seconds=30), enqueued) == []
    assert sweep(NOW + timedelta(seconds=35), enqueued) == [(delivery.pk, "webhook", 0)]


def test_the_sweep_takes_a_batch_at_a_time_the_longest_due_first(
    workspace, api_key, receiver, allow_private, enqueued, monkeypatch
):
    alert, _ = crossing_alert(workspace, api_key, urls=[receiver.url(f"/{n}") for n in range(3)], email=False)
    deliveries = list(AlertDelivery.objects.filter(alert=alert).order_by("pk"))
    for n, delivery in enumerate(deliveries):
        AlertDelivery.objects.filter(pk=delivery.pk).update(requeue_at=None, next_attempt_at=NOW - timedelta(minutes=n))
    AlertDelivery.objects.exclude(alert=alert).delete()
    monkeypatch.setattr(delivery_service, "SWEEP_BATCH", 2)
    assert [pk for pk, _, _ in sweep(NOW, enqueued)] == [deliveries[2].pk, deliveries[1].pk]
    assert [pk for pk, _, _ in sweep(NOW, enqueued)] == [deliveries[0].pk]
    assert sweep(NOW, enqueued) == []


def test_the_sweep_reads_the_deliveries_still_to_make_through_their_own_index(db):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's plan")
    from django.db.models import Q

    query = AlertDelivery.objects.filter(status__in=["pending", "retrying"], next_attempt_at__lte=NOW + SWEEP_EVERY).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=NOW)
    )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.order_by("next_attempt_at").explain()
    assert "delivery_open_due" in plan
