"""Delivering events to workspace endpoints: in order, one at a time per endpoint, signed, with
the budget alerts' retry policy and egress rules (core.webhooks).

Order: an endpoint's deliveries are made in (`order_at`, pk) order, `order_at` being the event's
`created`; the next one is not attempted until the one before it is delivered or given up. So
the claim is the endpoint's (`Endpoint.claimed_until`): one attempt at a time per endpoint, the
head of its queue. A failed head is retried after 30 s, 1, 2, 4, ... minutes, at most every 45,
until 24 hours after its delivery was created (core.webhooks.RETRY_*), then `failed`; the next
one goes at once. A delivery that waited behind a failing head for longer than its own window
still gets its attempts until the first failure past it (it is never given up untried).

As for budget alerts, the schedule is in the database (`EventDelivery.next_attempt_at`), never in
a worker: one task makes one attempt and ends; a delivered head enqueues the endpoint's next
at once; the sweep (endpoints_enqueue_due, every 10 s) enqueues the endpoints whose head is due
and that no attempt holds, so retries happen and a task lost with its worker is made good. A
worker killed mid-POST leaves its claim to expire (the task's hard limit + 5 s) and the attempt
is made again: at least once; receivers de-duplicate on the event `id`. Attempts run on the
webhooks queue (config/celery.py), and a workspace has at most WEBHOOK_CONCURRENCY_PER_WORKSPACE
endpoint attempts in flight (over it, deferred a few seconds, never dropped).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core import metrics, webhooks
from core.jobs import enqueue
from core.locks import workspace_lock

from .models import Endpoint, EventDelivery, EventDeliveryAttempt

logger = logging.getLogger(__name__)

ATTEMPT_OVERHEAD = 15  # seconds of a task's hard limit beyond the POST's deadline (a few queries)
CLAIM_MARGIN = 5  # an attempt holds its endpoint for its task's hard limit plus this
SWEEP_EVERY = timedelta(seconds=10)  # config/schedule.py
SWEEP_BATCH = 500  # endpoints a sweep enqueues at most
LOST_AFTER = timedelta(seconds=30)  # a task not started this long after its time was lost
_COUNTDOWN_MARGIN = 0.25
# PostgreSQL advisory lock class of a workspace's endpoint slots (pg_advisory_xact_lock): "mbne".
_LOCK_ENDPOINT_SLOTS = 0x6D62_6E65
_OPEN = (EventDelivery.Status.PENDING, EventDelivery.Status.RETRYING)
# meterboard_stream_delivery_attempts_total's outcome of each way an attempt settles its delivery.
_OUTCOMES = {EventDelivery.Status.DELIVERED: "delivered", EventDelivery.Status.RETRYING: "will_retry",
             EventDelivery.Status.FAILED: "gave_up"}  # fmt: skip
_BUSY = object()
_GAVE_UP = object()


def attempt_time_limit() -> int:
    """The hard time limit (s) of one attempt's task: the POST's deadline plus ATTEMPT_OVERHEAD."""
    return math.ceil(webhooks.webhook_timeout()) + ATTEMPT_OVERHEAD


def _queue(endpoint_id: int):
    return EventDelivery.objects.filter(endpoint_id=endpoint_id, status__in=_OPEN).order_by("order_at", "pk")


def _claim(endpoint_id: int, now: datetime, time_limit: float):
    """Take the endpoint for one attempt at the head of its queue, if the head is due and no
    attempt holds the endpoint: (endpoint, delivery, attempt saved STARTED); None when there is
    nothing to do now; _BUSY when the workspace has its cap of attempts in flight; _GAVE_UP when
    the head was given up (its window passed and its last attempt never reported back)."""
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().filter(pk=endpoint_id, active=True).first()
        if endpoint is None or (endpoint.claimed_until is not None and endpoint.claimed_until >= now):
            return None
        head = _queue(endpoint_id).first()
        if head is None or head.next_attempt_at is None or head.next_attempt_at > now:
            return None
        abandoned = EventDeliveryAttempt.objects.filter(delivery=head, outcome=EventDeliveryAttempt.Outcome.STARTED)
        if head.attempts and now >= head.created_at + webhooks.RETRY_WINDOW and abandoned.exists():
            abandoned.update(outcome=EventDeliveryAttempt.Outcome.ABANDONED, error="The worker stopped during this attempt.")
            _settle(head, EventDelivery.Status.FAILED, now, "The worker stopped during the last attempt.")
            return _GAVE_UP
        workspace_lock(_LOCK_ENDPOINT_SLOTS, endpoint.workspace_id)
        in_flight = (
            Endpoint.objects.filter(workspace_id=endpoint.workspace_id, claimed_until__gte=now).exclude(pk=endpoint_id).count()
        )
        if in_flight >= webhooks.webhook_concurrency_per_workspace():
            return _BUSY
        endpoint.claimed_until = now + timedelta(seconds=time_limit + CLAIM_MARGIN)
        endpoint.save(update_fields=["claimed_until"])
        head.attempts += 1
        # Where the schedule stands should this attempt never report back (its worker died).
        head.next_attempt_at = now + webhooks.retry_delay(head.attempts)
        head.requeue_at = None
        head.requeues = 0
        head.save(update_fields=["attempts", "next_attempt_at", "requeue_at", "requeues"])
        abandoned.update(outcome=EventDeliveryAttempt.Outcome.ABANDONED, error="The worker stopped during this attempt.")
        attempt = EventDeliveryAttempt.objects.create(delivery=head, number=head.attempts, started_at=now)
    head = EventDelivery.objects.select_related("event").get(pk=head.pk)
    return endpoint, head, attempt


def _settle(delivery: EventDelivery, status: str, at: datetime, error: str, retry_at: datetime | None = None) -> None:
    EventDelivery.objects.filter(pk=delivery.pk).update(
        status=status, next_attempt_at=retry_at, last_error=error,
        delivered_at=at if status == EventDelivery.Status.DELIVERED else None,
    )  # fmt: skip


def request_body(delivery: EventDelivery) -> bytes:
    """The signed JSON: {"id", "type", "version", "created", "data"}."""
    return json.dumps(delivery.event.payload(), separators=(",", ":")).encode()


def endpoint_deliver(endpoint_id: int, *, now: datetime | None = None, time_limit: float | None = None) -> str:
    """One attempt at the head of an endpoint's queue, if it is due and no attempt holds the
    endpoint; logged, then the delivery settled (delivered, retrying at a time, or failed after
    RETRY_WINDOW). After a delivered or given-up head the endpoint's next delivery is enqueued.
    Returns what happened: "idle", "deferred", "delivered", "retrying" or "failed"."""
    clock_given = now is not None
    now = now or timezone.now()
    time_limit = time_limit or attempt_time_limit()
    claimed = _claim(endpoint_id, now, time_limit)
    if claimed is None:
        return "idle"
    if claimed is _BUSY:
        endpoint_enqueue(endpoint_id, countdown=max(webhooks.webhook_timeout(), 1.0) * random.uniform(0.5, 1.0))
        return "deferred"
    if claimed is _GAVE_UP:
        metrics.STREAM_DELIVERY_ATTEMPTS.labels(_OUTCOMES[EventDelivery.Status.FAILED]).inc()
        endpoint_enqueue(endpoint_id)
        return "failed"
    endpoint, delivery, attempt = claimed
    started = time.monotonic()
    result = webhooks.post(
        endpoint.url,
        endpoint.secret,
        request_body(delivery),
        timeout=max(min(webhooks.webhook_timeout(), time_limit - ATTEMPT_OVERHEAD), 0.1),
        allow_private=getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False),
        headers={
            "Meterboard-Delivery": f"evd_{delivery.pk}",
            "Meterboard-Event": delivery.event.type,
            "Meterboard-Event-Id": delivery.event_id,
        },
    )
    finished = now if clock_given else timezone.now()
    status, retry_at = EventDelivery.Status.DELIVERED, None
    if result.outcome != "ok":
        retry_at = finished + webhooks.retry_delay(delivery.attempts)
        status = EventDelivery.Status.RETRYING
        if retry_at > delivery.created_at + webhooks.RETRY_WINDOW:
            status, retry_at = EventDelivery.Status.FAILED, None
    with transaction.atomic():
        EventDeliveryAttempt.objects.filter(pk=attempt.pk).update(
            outcome=result.outcome, http_status=result.http_status, error=result.error,
            duration_ms=int((time.monotonic() - started) * 1000),
        )  # fmt: skip
        _settle(delivery, status, finished, result.error, retry_at)
        Endpoint.objects.filter(pk=endpoint_id).update(claimed_until=None)
    _attempt_count(delivery, status, finished)
    if status == EventDelivery.Status.FAILED:
        logger.warning("notifications: gave up delivering %s to endpoint %s: %s", delivery.event_id, endpoint_id, result.error)
    if status != EventDelivery.Status.RETRYING:
        endpoint_enqueue(endpoint_id)  # the next one in order, at once
    return status


def _attempt_count(delivery: EventDelivery, status: str, at: datetime) -> None:
    """The attempt's outcome and, once delivered, how long after the event's `created` (a replay's
    age says nothing of delivery: not counted)."""
    metrics.STREAM_DELIVERY_ATTEMPTS.labels(_OUTCOMES[status]).inc()
    if status == EventDelivery.Status.DELIVERED and not delivery.replay:
        metrics.STREAM_DELIVERY_LATENCY.observe(max((at - delivery.event.created).total_seconds(), 0.0))


def endpoint_enqueue(endpoint_id: int, *, countdown: float = 0) -> None:
    """Ask for an attempt at an endpoint's next delivery (notifications.tasks.endpoint_deliver on
    the webhooks queue). Losing this message loses nothing: the sweep finds the endpoint."""
    try:
        enqueue("notifications.tasks.endpoint_deliver", endpoint_id, countdown=countdown, expires=countdown + 3600)
    except Exception:  # the broker is down: the sweep enqueues it once it answers
        logger.exception("notifications: could not enqueue endpoint %s", endpoint_id)


def endpoints_enqueue_due(*, now: datetime | None = None) -> int:
    """The sweep (beat, every SWEEP_EVERY): for each active endpoint no attempt holds, whose
    queue's head is due before the next sweep and has no live task coming (`requeue_at`), enqueue
    an attempt with a countdown to its time. Returns how many endpoints were enqueued."""
    now = now or timezone.now()
    horizon = now + SWEEP_EVERY
    planned = []
    with transaction.atomic():
        # The heads: the first open delivery of each endpoint (open deliveries are few: those
        # not yet made, and those behind a failing head).
        rows = (
            EventDelivery.objects.filter(status__in=_OPEN, endpoint__active=True)
            .filter(Q(endpoint__claimed_until__isnull=True) | Q(endpoint__claimed_until__lt=now))
            .order_by("endpoint_id", "order_at", "pk")
            .values_list("pk", "endpoint_id", "next_attempt_at", "requeue_at")
        )
        heads, seen = [], set()
        for pk, endpoint_id, next_attempt_at, requeue_at in rows.iterator(chunk_size=2000):
            if endpoint_id in seen:
                continue
            seen.add(endpoint_id)
            if next_attempt_at is not None and next_attempt_at <= horizon and (requeue_at is None or requeue_at <= now):
                heads.append((pk, endpoint_id, max(next_attempt_at, now)))
            if len(heads) >= SWEEP_BATCH:
                break
        for pk, endpoint_id, at in heads:
            EventDelivery.objects.filter(pk=pk).update(requeue_at=at + LOST_AFTER)
            countdown = (at - now).total_seconds()
            planned.append((endpoint_id, countdown + _COUNTDOWN_MARGIN if countdown > 0 else 0))
    for endpoint_id, countdown in planned:
        endpoint_enqueue(endpoint_id, countdown=countdown)
    return len(planned)
