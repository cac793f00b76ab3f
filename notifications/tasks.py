"""Celery tasks of the event stream. Thin: each takes ids and runs the service of its name."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def endpoint_deliver(endpoint_id: int) -> str:
    """Placeholder until delivery lands: the next delivery of one endpoint."""
    return "skipped"
