"""Celery tasks for billing. Thin: they take ids, call a service, and return a summary.

Their schedule is in config/schedule.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from celery import shared_task
from django.utils import timezone as dj_timezone

from . import payments
from .services import CloseRefused, period_close


def previous_month(now: datetime):
    """The 1st of the UTC month before `now`'s."""
    first = now.astimezone(timezone.utc).date().replace(day=1)
    return (first - timedelta(days=1)).replace(day=1)


# Closing and charging are idempotent, so a retry after a crash or a lost database connection
# finishes what is missing. CloseRefused needs a person (a later month is closed already).
@shared_task(
    acks_late=True,
    autoretry_for=(Exception,),
    dont_autoretry_for=(CloseRefused, payments.PaymentsNotConfigured),
    retry_backoff=300,
    retry_backoff_max=3 * 3600,
    max_retries=6,
)
def period_close_previous_month() -> dict:
    """Close the previous UTC month for every workspace, then charge what is due."""
    now = dj_timezone.now()
    period = previous_month(now)
    closed = period_close(period, now=now)
    charged = payments.statements_charge_due(period, now=now)
    return {
        "period": f"{period:%Y-%m}",
        "finalized": closed.created,
        "already_closed": closed.already_closed,
        "paid": charged.succeeded,
        "declined": charged.failed,
        "skipped": charged.skipped,
    }


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=60, max_retries=3)
def payments_retry_due() -> dict:
    """Retry declined statements whose next retry has come; settle attempts a crash left STARTED."""
    report = payments.payments_retry_due()
    return {"paid": report.succeeded, "declined": report.failed, "skipped": report.skipped}


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=60, max_retries=3, expires=24 * 3600)
def payments_retry_workspace(workspace_id: int) -> dict:
    """Charge a workspace's payment_failed statements now: a card was just added."""
    report = payments.workspace_retry_failed(workspace_id)
    return {"paid": report.succeeded, "declined": report.failed, "skipped": report.skipped}
