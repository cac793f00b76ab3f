"""Celery tasks for budgets. Thin: they take ids, call a service, and return a summary.

Their schedule is in config/schedule.py; ingestion (budgets.spend.SpendRecording) and budget
changes enqueue `budgets_evaluate_workspace`, an evaluation enqueues `alert_delivery_send` (e-mail,
default queue) and `webhook_delivery_send` (the webhooks queue, config/celery.py).
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone

from . import counters, services
from .models import AlertDelivery


# Evaluating is idempotent (alerts are unique per threshold and month): a retry after a lost
# database connection just finishes the job.
@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=5, max_retries=5)
def budgets_evaluate_workspace(workspace_id: int) -> dict:
    """Evaluate one workspace's budgets and free allowance; record and send new alerts."""
    counters.evaluation_pending_clear(workspace_id)  # changes from now on need another evaluation
    report = services.workspace_evaluate(workspace_id)
    return {"workspace": workspace_id, "budgets": report.budgets, "alerts": [alert.pk for alert in report.recorded]}


@shared_task(acks_late=True)
def budgets_evaluate_due() -> dict:
    """The every-minute safety net: request an evaluation of every workspace that may need one."""
    return {"enqueued": services.evaluations_request_due()}


# Retries are the delivery schedule (services.retry_delay, 24 h): the service says when to come
# back, the task re-enqueues itself with that countdown and with the 24 h window as its expiry.
# A lost task is found by deliveries_retry_overdue. max_retries bounds the schedule (~38 attempts).
# The hard time limit is below the claim an attempt holds (services.CLAIM_FOR), so that no other
# task claims a delivery while this one may still be sending it.
DELIVERY_TASK_OPTIONS = dict(
    bind=True, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=30, max_retries=60,
    time_limit=services.DELIVERY_TIME_LIMIT,
)  # fmt: skip


def _attempt(task, delivery_id: int) -> str:
    result = services.delivery_attempt(delivery_id)
    if result.status == "deferred":  # the workspace's webhooks are busy: later, not counted
        countdown = max((result.retry_at - timezone.now()).total_seconds(), 0)
        services.delivery_enqueue(delivery_id, AlertDelivery.Channel.WEBHOOK, countdown=countdown, expires=result.give_up_at)
        return result.status
    if result.retry_at is not None:
        countdown = max((result.retry_at - timezone.now()).total_seconds(), 0)
        raise task.retry(countdown=countdown, expires=result.give_up_at)
    return result.status


@shared_task(**DELIVERY_TASK_OPTIONS)
def alert_delivery_send(self, delivery_id: int) -> str:
    """One attempt at delivering an alert by e-mail (services.delivery_attempt), on the default
    queue. A webhook delivery (a task enqueued before webhooks had their own queue) is handed to
    webhook_delivery_send instead."""
    channel = AlertDelivery.objects.filter(pk=delivery_id).values_list("channel", flat=True).first()
    if channel == AlertDelivery.Channel.WEBHOOK:
        services.delivery_enqueue(delivery_id, channel)
        return "forwarded"
    return _attempt(self, delivery_id)


@shared_task(**DELIVERY_TASK_OPTIONS)
def webhook_delivery_send(self, delivery_id: int) -> str:
    """One attempt at POSTing an alert to a webhook, on the webhooks queue (config/celery.py),
    which only webhook workers consume: a slow receiver delays no evaluation, charge or e-mail."""
    return _attempt(self, delivery_id)


@shared_task(acks_late=True)
def deliveries_retry_overdue() -> dict:
    """Enqueue deliveries whose task was lost (broker down, worker killed mid-attempt)."""
    return {"enqueued": services.deliveries_enqueue_overdue()}
