"""The record of each scheduled close, and the e-mail to staff when one fails for good.

A month that silently stays open is how usage and fees went unbilled: every run of the scheduled
close is written down (the staff page lists them), and when its retries are exhausted, or it is
refused for a reason that needs a person, every active staff member with an e-mail address is told
what failed and what to run.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.utils import timezone

from .models import CloseRun

logger = logging.getLogger(__name__)


def close_run_started(period: date, *, now: datetime | None = None) -> CloseRun:
    """The unfinished run for `period` (a retry continues it), or a new one."""
    run = CloseRun.objects.filter(period=period).exclude(status=CloseRun.Status.SUCCEEDED).order_by("-pk").first()
    if run is None or run.status == CloseRun.Status.FAILED:
        run = CloseRun(period=period, started_at=now or timezone.now())
    run.status = CloseRun.Status.RUNNING
    run.attempts += 1
    run.save()
    return run


def close_run_succeeded(run: CloseRun, *, months: dict[date, int], created: int) -> None:
    run.status = CloseRun.Status.SUCCEEDED
    run.finished_at = timezone.now()
    run.months_closed = [f"{month:%Y-%m}" for month, _ in sorted(months.items())]
    run.statements_created = created
    run.error = ""
    run.save()


def close_run_failed(run: CloseRun, error: BaseException, *, final: bool, notify: bool = True) -> None:
    """Record a failed attempt; when it is the last one, e-mail staff (unless a person ran it)."""
    run.status = CloseRun.Status.FAILED if final else CloseRun.Status.RETRYING
    run.finished_at = timezone.now() if final else None
    run.error = f"{type(error).__name__}: {error}"[:2000]
    run.save()
    if final and notify:
        close_failed_notify(run)


def staff_recipients() -> list[str]:
    emails = (
        get_user_model().objects.filter(is_staff=True, is_active=True).exclude(email="")
        .order_by("pk").values_list("email", flat=True)
    )
    return list(dict.fromkeys(emails))


def close_failed_notify(run: CloseRun) -> int:
    """E-mail staff that the close of a month failed for good. Returns the number of recipients."""
    recipients = staff_recipients()
    logger.error("close of %s failed after %s attempts: %s", f"{run.period:%Y-%m}", run.attempts, run.error)
    if not recipients:
        return 0
    month = f"{run.period:%Y-%m}"
    send_mail(
        subject=f"Meterboard: closing {month} failed",
        message=(
            f"The scheduled close of {month} failed after {run.attempts} attempts and will not be retried.\n\n"
            f"Error: {run.error}\n\n"
            f"No statement is lost: months close in order, so the next close also closes {month}. To close "
            f"it now, fix the cause and run:\n\n    python manage.py close_period {month}\n\n"
            f"The staff page lists every close run."
        ),
        from_email=None,
        recipient_list=recipients,
    )
    return len(recipients)
