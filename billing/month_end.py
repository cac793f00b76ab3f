"""The month-end job, one service for the beat's task and `manage.py close_period`: close the month
(billing.close), then charge what is due (billing.payments), recorded as a CloseRun (billing.close_runs:
the staff page lists every run; staff are e-mailed when the scheduled one fails for good)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from django.utils import timezone

from core import metrics
from workspaces.models import Workspace

from .close import CloseReport, period_close
from .close_runs import close_run_failed, close_run_started, close_run_succeeded
from .payment_report import ChargeReport
from .payments import statements_charge_due


@dataclass(frozen=True)
class MonthEnd:
    closed: CloseReport
    charged: ChargeReport | None  # None: asked not to charge


def period_close_and_charge(
    period: date,
    *,
    only: Workspace | None = None,
    now: datetime | None = None,
    charge: bool = True,
    progress: Callable[[int, int], None] | None = None,
    failure_is_final: Callable[[Exception], bool] = lambda exc: True,
    notify: bool = True,
) -> MonthEnd:
    """Close `period` (and any earlier month still open) and charge every statement due up to it.
    Idempotent: a re-run finishes what is missing and charges nobody twice.

    A run over every workspace is recorded as a CloseRun; when it fails, `failure_is_final(exc)`
    says whether it will be retried (a task's retries) or not, and `notify` whether staff are
    e-mailed about a final failure (not when a person ran it and sees the error)."""
    now = now or timezone.now()
    run = close_run_started(period, now=now) if only is None else None
    started = time.monotonic()
    metrics.close_progress(0, 0)

    def progress_reported(done: int, total: int) -> None:
        metrics.close_progress(done, total)
        if progress is not None:
            progress(done, total)

    try:
        closed = period_close(period, only=only, now=now, progress=progress_reported)
        charged = statements_charge_due(period, only=only, now=now) if charge else None
    except Exception as exc:
        metrics.CLOSE_SECONDS.labels("failed").observe(time.monotonic() - started)
        if run is not None:
            close_run_failed(run, exc, final=failure_is_final(exc), notify=notify)
        raise
    metrics.CLOSE_SECONDS.labels("succeeded").observe(time.monotonic() - started)
    if run is not None:
        close_run_succeeded(run, months=closed.months, created=closed.created)
    return MonthEnd(closed, charged)
