"""Celery tasks for budgets. Thin: they take ids, call a service, and return a summary.

Their schedule is in config/schedule.py; ingestion (budgets.services.SpendRecording) and budget
changes enqueue `budgets_evaluate_workspace`, an evaluation enqueues `alert_delivery_send`.
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone

from . import counters, services


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
@shared_task(
    bind=True, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=30, max_retries=60, time_limit=300
)
def alert_delivery_send(self, delivery_id: int) -> str:
    """One attempt at delivering an alert by e-mail or webhook (services.delivery_attempt)."""
    result = services.delivery_attempt(delivery_id)
    if result.retry_at is not None:
        countdown = max((result.retry_at - timezone.now()).total_seconds(), 0)
        raise self.retry(countdown=countdown, expires=result.give_up_at)
    return result.status


@shared_task(acks_late=True)
def deliveries_retry_overdue() -> dict:
    """Enqueue deliveries whose task was lost (broker down, worker killed mid-attempt)."""
    return {"enqueued": services.deliveries_enqueue_overdue()}
