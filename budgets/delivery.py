"""Delivering an alert: one attempt per task (budgets.tasks), its claim, its outcome, and the
sweep that keeps the schedule; the webhook's JSON.

Delivery schedule (RETRY_*): an alert is sent as soon as it is recorded (budgets.evaluation); a
failed attempt is retried after 30 s, 1, 2, 4, 8, 16 and 32 minutes, then every 45 minutes, until
24 hours after the alert; then the delivery is `failed`. Every attempt is a DeliveryAttempt row.

The schedule is kept in the database, never in a worker's memory, so that a worker's death loses
none of it: each attempt claims its delivery for its task's hard time limit plus CLAIM_MARGIN
(25 s for a webhook with the default 5 s deadline) and, as it starts, moves `next_attempt_at` to
when the next attempt is due should it never report back (30 s for the first); a failed attempt
sets it and its task ends. The sweep (deliveries_enqueue_due, beat every SWEEP_EVERY = 10 s)
enqueues every delivery due before its next run, with a countdown to its time, unless an attempt
holds it or a task is already coming for it (`requeue_at`: a task unclaimed LOST_AFTER = 30 s past
its time was lost with its worker). Worker deaths, measured with real workers killed (SIGKILL):
mid-POST, the alert is sent again ~31 s after the first try (twice in all, same
Meterboard-Delivery id: at least once); a retry due while its worker is dead goes on time.

Webhooks are sent by their own task on their own Celery queue (the webhooks queue,
config/celery.py), so that a slow receiver can never delay evaluations, charges or e-mail; each
attempt has one wall-clock deadline (WEBHOOK_TIMEOUT_SECONDS, budgets.webhooks.post), and a
workspace has at most WEBHOOK_CONCURRENCY_PER_WORKSPACE attempts in flight: over it, a delivery is
deferred (re-queued a few seconds later, never dropped).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core import metrics, webhooks
from core.jobs import enqueue
from core.locks import workspace_lock
from core.money import CURRENCY, decimal_text

# The delivery policy budget alerts share with the event stream; these names stay importable
# from here (tests and settings docs refer to budgets.delivery.RETRY_WINDOW and the like).
from core.webhooks import (  # noqa: F401
    MAX_WEBHOOK_TIMEOUT,
    RETRY_FIRST_DELAY,
    RETRY_MAX_DELAY,
    RETRY_WINDOW,
    WEBHOOK_CONCURRENCY_PER_WORKSPACE,
    retry_delay,
    webhook_concurrency_per_workspace,
    webhook_timeout,
)
from workspaces.contacts import dashboard_url

from .emails import alert_email_send, alert_headline
from .models import Alert, AlertDelivery, DeliveryAttempt

logger = logging.getLogger(__name__)

# The hard time limit of one attempt's task (budgets.tasks) is the attempt's own deadline plus
# this: the claim before and the outcome saved after (a few queries). A worker process still in
# the task then is killed by its pool.
ATTEMPT_OVERHEAD = 15
# An e-mail attempt: EMAIL_TIMEOUT bounds each socket operation, not the whole conversation;
# connecting, the SMTP dialogue and the message get this many of them.
EMAIL_TIMEOUTS_PER_ATTEMPT = 3
# An attempt holds its delivery (`claimed_until`) for its task's hard time limit plus this: the pool
# kills a task past its limit within about a second, and machines' clocks differ a little. So no
# other task claims a delivery whose attempt may still be sending, and a worker that dies
# mid-attempt frees it that soon (25 s for a webhook with the default 5 s deadline).
CLAIM_MARGIN = 5
# PostgreSQL advisory lock class of a workspace's webhook slots (pg_advisory_xact_lock): "mbwd".
_LOCK_WEBHOOK_SLOTS = 0x6D62_7764
# The sweep (deliveries_enqueue_due) runs this often (config/schedule.py) and enqueues, each with
# a countdown to its due time, the deliveries due before its next run.
SWEEP_EVERY = timedelta(seconds=10)
SWEEP_BATCH = 500  # deliveries a sweep enqueues at most; the next one takes the rest
# A task enqueued for a delivery and not claimed this long after it was due to start was lost (a
# worker died holding it, the broker lost it): the sweep enqueues another. Longer than a healthy
# queue ever waits; a duplicate task is harmless (it finds the delivery claimed or done). Each
# task lost in a row doubles the wait, up to LOST_AFTER_MAX, so that a queue nobody consumes
# (workers stopped for hours) gets a copy of each delivery every half hour, not every 30 s.
LOST_AFTER = timedelta(seconds=30)
LOST_AFTER_MAX = timedelta(minutes=30)
# A countdown ends this much after the due time, so that a task never runs just before it.
_COUNTDOWN_MARGIN = 0.25


@dataclass(frozen=True)
class DeliveryResult:
    # The delivery's status after this call; "skipped" (not due, or held by another attempt) or
    # "deferred" (its workspace has WEBHOOK_CONCURRENCY_PER_WORKSPACE attempts in flight: call
    # again at retry_at, no attempt was made or counted).
    status: str
    retry_at: datetime | None = None  # when to call again
    give_up_at: datetime | None = None


def attempt_time_limit(channel: str) -> int:
    """The hard time limit (seconds) of the task making one attempt: the attempt's own deadline
    plus ATTEMPT_OVERHEAD. 20 s for a webhook (WEBHOOK_TIMEOUT_SECONDS 5), 45 s for an e-mail
    (EMAIL_TIMEOUT 10) with the defaults."""
    if channel == AlertDelivery.Channel.WEBHOOK:
        deadline = webhook_timeout()
    else:
        deadline = EMAIL_TIMEOUTS_PER_ATTEMPT * float(getattr(settings, "EMAIL_TIMEOUT", None) or 10)
    return math.ceil(deadline) + ATTEMPT_OVERHEAD


def claim_length(time_limit: float) -> timedelta:
    """How long an attempt holds its delivery, given the hard time limit of the task making it."""
    return timedelta(seconds=time_limit + CLAIM_MARGIN)


def _defer_delay() -> timedelta:
    """How long a delivery over its workspace's cap waits: about one attempt's deadline (a slot
    is free by then), spread so that deferred deliveries do not come back all at once."""
    return timedelta(seconds=max(webhook_timeout(), 1.0) * random.uniform(0.5, 1.0))


_BUSY = object()  # _claim: the workspace has as many webhook attempts in flight as it may


# The `type` of a webhook's JSON (and its Meterboard-Event header), per alert kind.
EVENT_TYPES = {
    Alert.Kind.ACTUAL: "budget.threshold_reached",
    Alert.Kind.FORECAST: "budget.forecast_threshold_reached",
    Alert.Kind.FREE_ALLOWANCE: "free_allowance.used_up",
    Alert.Kind.TEST: "budget.test",
    Alert.Kind.ANOMALY: "spend.anomaly",
}


def alert_payload(alert: Alert) -> dict:
    """The JSON a webhook receives. Money as strings with 6 decimal places, USD."""
    budget = alert.budget
    return {
        "id": alert.pk,
        "type": EVENT_TYPES[alert.kind],
        "created_at": alert.created_at.isoformat().replace("+00:00", "Z"),
        "workspace": alert.workspace.slug,
        "period": f"{alert.period:%Y-%m}",
        "kind": alert.kind,
        "threshold": alert.threshold,
        "budget": None
        if budget is None
        else {
            "id": budget.pk,
            "amount": decimal_text(budget.amount),
            "api_key": budget.api_key.display_prefix if budget.api_key_id else None,
            "hard_limit": budget.hard_limit,
        },
        "budget_amount": decimal_text(alert.budget_amount),
        "spend": decimal_text(alert.spend),
        "forecast": decimal_text(alert.forecast),
        "currency": CURRENCY,
        "message": alert_headline(alert),
        "dashboard_url": dashboard_url(alert.workspace),
        **({"anomaly": anomaly_payload(alert.anomaly)} if alert.kind == Alert.Kind.ANOMALY else {}),
    }


def anomaly_payload(anomaly) -> dict:
    """The numbers that made a day anomalous (budgets.anomaly), as webhooks and events carry them."""
    return {
        "day": anomaly.day.isoformat(),
        "api_key": anomaly.api_key.display_prefix if anomaly.api_key_id else None,
        "amount": decimal_text(anomaly.amount),
        "baseline": decimal_text(anomaly.baseline),
        "mad": decimal_text(anomaly.mad),
        "score": str(anomaly.score),
        "threshold": str(anomaly.threshold),
        "fraction_of_day": str(anomaly.fraction),
        "seasonal": anomaly.seasonal,
    }


_OPEN = (AlertDelivery.Status.PENDING, AlertDelivery.Status.RETRYING)


def _claim(delivery_id: int, now: datetime, time_limit: float | None):
    """Take the delivery for one attempt (saved STARTED) if it is due and nobody holds it: the
    (delivery, attempt); None if it is not due or held; _BUSY for a webhook whose workspace has
    WEBHOOK_CONCURRENCY_PER_WORKSPACE attempts in flight (claims not expired), counted under a
    per-workspace lock so that two claims cannot both take the last slot.

    The claim lasts the task's hard time limit (`time_limit`, by default the channel's
    attempt_time_limit) plus CLAIM_MARGIN, and moves `next_attempt_at` to when the next attempt
    is due should this one never report back (its worker died): the retry schedule is in the
    database from the start of every attempt. An attempt a dead worker left STARTED is marked
    abandoned; past the retry window, the delivery is failed instead of attempted again."""
    with transaction.atomic():
        due = AlertDelivery.objects.filter(pk=delivery_id, status__in=_OPEN, next_attempt_at__lte=now).filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
        )
        row = due.values("channel", "alert__workspace_id", "attempts", "created_at").first()
        if row is None:
            return None
        give_up_at = row["created_at"] + RETRY_WINDOW
        abandoned = DeliveryAttempt.objects.filter(delivery_id=delivery_id, outcome=DeliveryAttempt.Outcome.STARTED)
        if now >= give_up_at and abandoned.exists():  # the last attempt of the window never ended
            abandoned.update(outcome=DeliveryAttempt.Outcome.ABANDONED, error="The worker stopped during this attempt.")
            due.update(status=AlertDelivery.Status.FAILED, next_attempt_at=None, claimed_until=None, requeue_at=None,
                       last_error="The worker stopped during the last attempt.")  # fmt: skip
            logger.warning("budgets: gave up delivery %s, its last attempt was abandoned", delivery_id)
            metrics.ALERT_DELIVERIES_FAILED.labels(row["channel"]).inc()
            return None
        if row["channel"] == AlertDelivery.Channel.WEBHOOK:
            workspace_id = row["alert__workspace_id"]
            workspace_lock(_LOCK_WEBHOOK_SLOTS, workspace_id)
            in_flight = (
                # Only open deliveries can be claimed (every end of an attempt clears the claim): the
                # filter on status lets the partial index of open deliveries serve this count,
                # instead of every delivery the workspace ever had.
                AlertDelivery.objects.filter(
                    alert__workspace_id=workspace_id, channel=AlertDelivery.Channel.WEBHOOK, status__in=_OPEN,
                    claimed_until__gte=now,
                )
                .exclude(pk=delivery_id)
                .count()
            )
            if in_flight >= webhook_concurrency_per_workspace():
                return _BUSY
        attempts = row["attempts"] + 1
        claimed = due.filter(attempts=row["attempts"]).update(
            claimed_until=now + claim_length(time_limit or attempt_time_limit(row["channel"])),
            attempts=attempts,
            next_attempt_at=min(now + retry_delay(attempts), give_up_at),
            requeue_at=None,
            requeues=0,
        )
        if not claimed:
            return None
        delivery = AlertDelivery.objects.select_related(
            "alert__workspace", "alert__budget__api_key", "endpoint"
        ).get(pk=delivery_id)
        abandoned.update(outcome=DeliveryAttempt.Outcome.ABANDONED, error="The worker stopped during this attempt.")
        attempt = DeliveryAttempt.objects.create(delivery=delivery, number=delivery.attempts, started_at=now)
    return delivery, attempt


def _send(delivery: AlertDelivery, *, webhook_deadline: float) -> webhooks.PostResult:
    if delivery.channel == AlertDelivery.Channel.EMAIL:
        try:
            alert_email_send(delivery.alert, delivery.target)
        except TimeoutError:
            return webhooks.PostResult("timeout", error="The mail server did not answer in time.")
        except Exception as exc:  # smtplib and socket errors: retried
            return webhooks.PostResult("error", error=f"{type(exc).__name__}: {exc}"[:500])
        return webhooks.PostResult("ok")
    body = json.dumps(alert_payload(delivery.alert), separators=(",", ":")).encode()
    return webhooks.post(
        delivery.endpoint.url,
        delivery.endpoint.secret,
        body,
        timeout=webhook_deadline,
        allow_private=getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False),
        headers={
            "Meterboard-Delivery": str(delivery.pk),
            "Meterboard-Event": EVENT_TYPES[delivery.alert.kind],
        },
    )


def delivery_attempt(delivery_id: int, *, now: datetime | None = None, time_limit: float | None = None) -> DeliveryResult:
    """Make one attempt at a delivery if it is due and no other attempt holds it; log it; settle
    the delivery (delivered, retrying at a time, or failed after RETRY_WINDOW).

    `time_limit`: the hard time limit of the task calling (budgets.tasks), which the claim
    outlasts and a webhook's deadline fits in; by default the channel's attempt_time_limit().

    Safe to call twice for the same delivery at once (the claim is an atomic UPDATE, held longer
    than a delivery task may run): one sends. A webhook over its workspace's cap of attempts in
    flight is "deferred": nothing is sent or counted, the caller tries again at retry_at.
    At least once, not exactly once, if a worker dies after sending and before saving the
    outcome; receivers de-duplicate on the `Meterboard-Delivery` header (or the alert `id`)."""
    claimed = _claim(delivery_id, now or timezone.now(), time_limit)
    if claimed is None:
        return DeliveryResult("skipped")
    if claimed is _BUSY:
        created_at = AlertDelivery.objects.filter(pk=delivery_id).values_list("created_at", flat=True).first()
        retry_at = (now or timezone.now()) + _defer_delay()
        return DeliveryResult("deferred", retry_at, None if created_at is None else created_at + RETRY_WINDOW)
    delivery, attempt = claimed
    give_up_at = delivery.created_at + RETRY_WINDOW
    if delivery.channel == AlertDelivery.Channel.WEBHOOK and delivery.endpoint is None:
        result = webhooks.PostResult("refused", error="The webhook endpoint was removed.")
        status = AlertDelivery.Status.CANCELLED
    else:
        limit = time_limit or attempt_time_limit(delivery.channel)
        started = time.monotonic()
        result = _send(delivery, webhook_deadline=max(min(webhook_timeout(), limit - ATTEMPT_OVERHEAD), 0.1))
        attempt.duration_ms = int((time.monotonic() - started) * 1000)
        status = AlertDelivery.Status.DELIVERED if result.outcome == "ok" else AlertDelivery.Status.RETRYING
    finished = now or timezone.now()
    retry_at = None
    if status == AlertDelivery.Status.RETRYING:
        retry_at = finished + retry_delay(delivery.attempts)
        if retry_at > give_up_at:
            status, retry_at = AlertDelivery.Status.FAILED, None
    attempt.outcome = result.outcome
    attempt.http_status = result.http_status
    attempt.error = result.error
    with transaction.atomic():
        attempt.save(update_fields=["outcome", "http_status", "error", "duration_ms"])
        AlertDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            claimed_until=None,
            next_attempt_at=retry_at,
            delivered_at=finished if status == AlertDelivery.Status.DELIVERED else None,
            last_error=result.error,
        )
    if status == AlertDelivery.Status.FAILED:
        logger.warning("budgets: gave up delivering alert %s to %s: %s", delivery.alert_id, delivery.target, result.error)
    _count(delivery.channel, result.outcome, status)
    return DeliveryResult(status, retry_at, give_up_at)


def _count(channel: str, outcome: str, status: str) -> None:
    metrics.ALERT_DELIVERY_ATTEMPTS.labels(channel, outcome).inc()
    if status == AlertDelivery.Status.DELIVERED:
        metrics.ALERTS_SENT.labels(channel).inc()
    elif status in (AlertDelivery.Status.FAILED, AlertDelivery.Status.CANCELLED):
        metrics.ALERT_DELIVERIES_FAILED.labels(channel).inc()


def email_delivery_send(delivery_id: int, *, time_limit: float | None = None) -> str:
    """One attempt at an e-mail delivery (the task of that name, on the default queue): its status
    after it. A webhook delivery is never sent from the default queue: it is handed to the webhooks
    queue instead ("forwarded")."""
    channel = AlertDelivery.objects.filter(pk=delivery_id).values_list("channel", flat=True).first()
    if channel == AlertDelivery.Channel.WEBHOOK:
        delivery_enqueue(delivery_id, channel)
        return "forwarded"
    return _attempt_or_requeue(delivery_id, AlertDelivery.Channel.EMAIL, time_limit)


def webhook_delivery_send(delivery_id: int, *, time_limit: float | None = None) -> str:
    """One attempt at POSTing an alert to a webhook (the task of that name, on the webhooks queue):
    its status after it."""
    return _attempt_or_requeue(delivery_id, AlertDelivery.Channel.WEBHOOK, time_limit)


def _attempt_or_requeue(delivery_id: int, channel: str, time_limit: float | None) -> str:
    result = delivery_attempt(delivery_id, time_limit=time_limit)
    if result.status == "deferred":  # the workspace's webhooks are busy: later, not counted
        delivery_requeue(delivery_id, channel, result.retry_at)
    return result.status


def deliveries_enqueue_due(*, now: datetime | None = None) -> int:
    """The sweep (beat, every SWEEP_EVERY): enqueue every delivery due before the next sweep that
    no attempt holds (its claim, if any, expired) and no task is coming for (none was enqueued
    since its last attempt, or the one enqueued was lost: still unclaimed at `requeue_at`), with
    a countdown to its due time. This is how retries happen, and how a delivery whose task or
    worker died is found again.
    At most SWEEP_BATCH a run, the longest due first; rows another sweep holds are skipped.
    Returns how many were enqueued."""
    now = now or timezone.now()
    horizon = now + SWEEP_EVERY
    with transaction.atomic():
        rows = list(
            AlertDelivery.objects.select_for_update(skip_locked=True)
            .filter(status__in=_OPEN, next_attempt_at__lte=horizon)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .filter(Q(requeue_at__isnull=True) | Q(requeue_at__lte=now))
            .order_by("next_attempt_at")
            .only("pk", "channel", "next_attempt_at", "requeue_at", "requeues")[:SWEEP_BATCH]
        )
        planned = []
        for row in rows:
            at = max(row.next_attempt_at, now)
            if row.requeue_at is not None:  # the task enqueued before never claimed it: lost
                row.requeues += 1
            row.requeue_at = at + _lost_after(row.requeues)
            countdown = (at - now).total_seconds()
            planned.append((row.pk, row.channel, countdown + _COUNTDOWN_MARGIN if countdown > 0 else 0))
        AlertDelivery.objects.bulk_update(rows, ["requeue_at", "requeues"])
    for delivery_id, channel, countdown in planned:
        try:
            delivery_enqueue(delivery_id, channel, countdown=countdown)
        except Exception:  # the broker is down: the next sweep after requeue_at tries again
            logger.exception("budgets: could not enqueue delivery %s", delivery_id)
    return len(planned)


def delivery_enqueue(delivery_id: int, channel: str, *, countdown: float = 0) -> None:
    """Enqueue one attempt: webhooks on the webhooks queue (budgets.tasks.webhook_delivery_send,
    routed there by config/celery.py), e-mails on the default one (email_delivery_send). The
    caller records `requeue_at`."""
    # A task still queued an hour after its time was long replaced by the sweep: drop it.
    options = {"countdown": countdown, "expires": countdown + 3600}
    if channel == AlertDelivery.Channel.WEBHOOK:
        enqueue("budgets.tasks.webhook_delivery_send", delivery_id, **options)
    else:
        enqueue("budgets.tasks.email_delivery_send", delivery_id, **options)


def deliveries_enqueue(deliveries: Sequence[tuple[int, str]]) -> None:
    """Enqueue the first attempt of new deliveries (id, channel), after their alert's commit."""
    for delivery_id, channel in deliveries:
        try:
            delivery_enqueue(delivery_id, channel)
        except Exception:  # the sweep enqueues it once the broker answers again (requeue_at)
            logger.exception("budgets: could not enqueue delivery %s", delivery_id)


def _lost_after(requeues: int) -> timedelta:
    return min(LOST_AFTER * 2 ** min(requeues, 16), LOST_AFTER_MAX)


def delivery_requeue(delivery_id: int, channel: str, at: datetime, *, now: datetime | None = None) -> None:
    """Enqueue an attempt to start at `at` (a deferred delivery), recorded so that the sweep does
    not take it for lost before then."""
    now = now or timezone.now()
    AlertDelivery.objects.filter(pk=delivery_id).update(requeue_at=at + LOST_AFTER)
    delivery_enqueue(delivery_id, channel, countdown=max((at - now).total_seconds(), 0) + _COUNTDOWN_MARGIN)
