"""Celery tasks for budgets. Thin: each takes ids, runs the service of its name, and returns a
summary. Services never import this module: they enqueue these tasks by name (core.jobs.enqueue).

Their schedule is in config/schedule.py; ingestion (budgets.spend.SpendRecording) and budget
changes enqueue `workspace_evaluate`, an evaluation enqueues `email_delivery_send` (default queue)
and `webhook_delivery_send` (the webhooks queue, config/celery.py), and the sweep
`deliveries_enqueue_due` enqueues them again when a retry is due or a worker died with them.

A worker that dies (SIGKILL, a lost machine) takes the tasks it held with it: they stay
unacknowledged in Redis until the broker's visibility timeout (an hour, config/settings.py).
Alerts do not wait for that. An evaluation it held is asked for again by the beat's next
every-minute run once the workspace's "pending" mark has expired (30 s, counters.PENDING_TTL);
a delivery it held, or was sending, is found by the sweep (delivery.deliveries_enqueue_due) once
its claim has expired (25 s for a webhook) and its next attempt is due (30 s after the one cut
short), or once its task is 30 s late (delivery.LOST_AFTER). With real workers killed
(tests/budgets/test_worker_faults.py) the alert arrived 30 to 75 s after the crossing event (at
most about 91 s: 30 s of mark and a minute of beat), within the 2 minutes promised.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError

from . import counters, delivery, evaluation
from .models import AlertDelivery

logger = logging.getLogger(__name__)


# Evaluating is idempotent (alerts are unique per threshold and month): a retry after a lost
# database connection just finishes the job.
@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=5, max_retries=5)
def workspace_evaluate(workspace_id: int) -> dict:
    """Evaluate one workspace's budgets and free allowance; record and send new alerts."""
    counters.evaluation_pending_clear(workspace_id)  # changes from now on need another evaluation
    report = evaluation.workspace_evaluate(workspace_id)
    _auto_recharge_request(workspace_id)
    return {"workspace": workspace_id, "budgets": report.budgets, "alerts": [alert.pk for alert in report.recorded]}


def _auto_recharge_request(workspace_id: int) -> None:
    """Spend moved, so did the live credit balance: ask for an auto-recharge check (its own task).
    Never fails (nor retries) the evaluation: the every-minute job checks again anyway."""
    from billing.auto_recharge import auto_recharge_request

    try:
        auto_recharge_request(workspace_id)
    except Exception:
        logger.exception("Could not request the auto-recharge check of workspace %s", workspace_id)


@shared_task(acks_late=True)
def evaluations_request_due() -> dict:
    """The every-minute safety net: request an evaluation of every workspace that may need one."""
    return {"enqueued": evaluation.evaluations_request_due()}


# One task, one attempt. The retry schedule is in the database (AlertDelivery.next_attempt_at, set
# when an attempt starts and when it ends), never in a worker's memory: a failed attempt ends its
# task, and the sweep (deliveries_enqueue_due, every 10 s) enqueues the next attempt when it is due,
# as it does for a delivery whose worker died mid-attempt (its claim expires) or whose task was
# lost with a worker (still unclaimed at requeue_at). So no Celery retry either: a database error
# fails the task, and the sweep finds the delivery again once the database answers.
# The hard time limit is the attempt's own deadline plus some overhead (delivery.attempt_time_limit:
# 20 s for a webhook, 45 s for an e-mail, with the defaults); the claim outlasts the limit the
# running task really has (from the message, else the task's), so that no other task claims a
# delivery while this one may still be sending it. The prefork pool (the default) enforces it.
DELIVERY_TASK_OPTIONS = dict(bind=True, acks_late=True)


def _time_limit(task) -> float | None:
    """The hard time limit the pool enforces on this run: the message's, else the task's."""
    hard = (task.request.timelimit or (None, None))[0]
    return hard or task.time_limit


@shared_task(**DELIVERY_TASK_OPTIONS, time_limit=delivery.attempt_time_limit(AlertDelivery.Channel.EMAIL))
def email_delivery_send(self, delivery_id: int) -> str:
    """One attempt at delivering an alert by e-mail, on the default queue."""
    return delivery.email_delivery_send(delivery_id, time_limit=_time_limit(self))


@shared_task(**DELIVERY_TASK_OPTIONS, time_limit=delivery.attempt_time_limit(AlertDelivery.Channel.WEBHOOK))
def webhook_delivery_send(self, delivery_id: int) -> str:
    """One attempt at POSTing an alert to a webhook, on the webhooks queue (config/celery.py),
    which only webhook workers consume: a slow receiver delays no evaluation, charge or e-mail."""
    return delivery.webhook_delivery_send(delivery_id, time_limit=_time_limit(self))


@shared_task(acks_late=True)
def deliveries_enqueue_due() -> dict:
    """The sweep, every 10 s: enqueue deliveries due (retries included) that no attempt holds and
    no live task is coming for."""
    return {"enqueued": delivery.deliveries_enqueue_due()}


# Both checks are idempotent (an anomaly is unique per workspace, key and day): a retry after a
# lost database connection just finishes the job.
@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=5, max_retries=3)
def anomalies_check_today() -> dict:
    """The hourly spend anomaly check of today so far (budgets.anomalies)."""
    from . import anomalies

    report = anomalies.anomalies_check_today()
    return {"day": report.day.isoformat(), "series": report.series, "anomalies": [a.pk for a in report.recorded]}


@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=5, max_retries=3)
def anomalies_check_yesterday() -> dict:
    """The daily spend anomaly check of yesterday, whole (budgets.anomalies)."""
    from . import anomalies

    report = anomalies.anomalies_check_yesterday()
    return {"day": report.day.isoformat(), "series": report.series, "anomalies": [a.pk for a in report.recorded]}
