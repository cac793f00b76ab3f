"""Celery tasks of the event stream. Thin: each takes ids and runs the service of its name.
Services enqueue them by name (core.jobs.enqueue); the sweep's schedule is in config/schedule.py."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task

from . import delivery, retention


def _time_limit(task) -> float | None:
    """The hard time limit the pool enforces on this run: the message's, else the task's."""
    hard = (task.request.timelimit or (None, None))[0]
    return hard or task.time_limit


# One task, one attempt; the retry schedule is in the database (notifications.delivery), so no
# Celery retry. On the webhooks queue (config/celery.py): a slow receiver delays nothing else.
@shared_task(bind=True, acks_late=True, time_limit=delivery.attempt_time_limit())
def endpoint_deliver(self, endpoint_id: int) -> str:
    """One attempt at the next delivery (in order) of one workspace webhook endpoint."""
    return delivery.endpoint_deliver(endpoint_id, time_limit=_time_limit(self))


@shared_task(acks_late=True)
def endpoints_enqueue_due() -> dict:
    """The sweep, every 10 s: enqueue the endpoints whose next delivery is due."""
    return {"enqueued": delivery.endpoints_enqueue_due()}


@shared_task(acks_late=True)
def events_prune() -> dict:
    """Daily: events past EVENT_RETENTION_DAYS, with no delivery in flight, deleted in batches."""
    return asdict(retention.events_prune())
