"""The statements pages' reads: the statements, one with its trail, the months not closed yet
(this month's draft, earlier months pending their scheduled close), and a statement's short summary."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, QuerySet

from billing import drafts
from billing.drafts import Draft
from billing.errors import CloseRefused
from billing.models import PaymentAttempt, Statement
from billing.statement_groups import GroupedStatement, grouped
from core.money import ZERO
from core.periods import month_start, next_month
from workspaces.models import Workspace

from .. import clock

logger = logging.getLogger(__name__)


def statements_of(workspace: Workspace) -> QuerySet[Statement]:
    return (
        Statement.objects.filter(workspace=workspace)
        .select_related("plan")
        .annotate(attempts=Count("payment_attempts"))
        .order_by("-period", "-pk")
    )


def statement_of(workspace: Workspace, statement_id: int) -> Statement | None:
    """One of the workspace's statements with its lines, payment attempts and audit trail; None
    for another workspace's (the same answer as for one that does not exist)."""
    return (
        Statement.objects.filter(workspace=workspace, pk=statement_id)
        .select_related("plan", "reissue_of")
        .prefetch_related("lines", "payment_attempts", "audit", "reissues", "invoices")
        .first()
    )


def last_attempt_error(statement: Statement) -> str:
    attempts = [a for a in statement.payment_attempts.all() if a.status == PaymentAttempt.Status.FAILED]
    return attempts[-1].error if attempts else ""


# --- The months not closed yet ------------------------------------------------------------------------


def scheduled_close(period: date) -> datetime:
    """When the scheduled close closes `period`: BILLING_CLOSE_DAY of the next month, at the hour
    and minute of the beat job (config/schedule.py; 02:00 UTC unless changed there)."""
    hour, minute = 2, 0
    entry = settings.CELERY_BEAT_SCHEDULE.get("billing-close-previous-month") or {}
    schedule = entry.get("schedule")
    if getattr(schedule, "hour", None) and getattr(schedule, "minute", None):
        hour, minute = min(schedule.hour), min(schedule.minute)
    day = next_month(period).replace(day=settings.BILLING_CLOSE_DAY)
    return datetime.combine(day, time(hour, minute), tzinfo=dt_timezone.utc)


def _utc_label(moment: datetime) -> str:
    moment = moment.astimezone(dt_timezone.utc)
    return f"{moment:%B} {moment.day} at {moment:%H:%M} UTC"


def scheduled_close_label(period: date) -> str:
    """When the scheduled close closes `period`, for a sentence: "December 2 at 02:00 UTC"."""
    return _utc_label(scheduled_close(period))


@dataclass(frozen=True)
class PendingMonth:
    """A month that is over but not closed yet, as closing it now would bill it."""

    draft: Draft
    closes_at: datetime  # when the scheduled close closes it (UTC)
    overdue: bool  # that time has passed: the close failed or has not run yet

    @property
    def anchor(self) -> str:
        return f"pending-{self.draft.period:%Y-%m}"

    @property
    def closes_label(self) -> str:
        return _utc_label(self.closes_at)

    @property
    def summary(self) -> list[SummaryLine]:
        return lines_summary(self.draft.built.lines)

    @property
    def grouped(self) -> GroupedStatement:
        return grouped(self.draft.built.lines)


class MonthClosing:
    """For a dataclass whose `month` is a UTC month's 1st (the current month, on the statements
    pages and the overview): when that month is over, and when its statement is made."""

    month: date

    @property
    def next_month_start(self) -> date:
        """The 1st of the next month: the current one is over at its midnight (UTC)."""
        return next_month(self.month)

    @property
    def closes_label(self) -> str:
        return scheduled_close_label(self.month)


@dataclass(frozen=True)
class Preview(MonthClosing):
    """What the statements pages show of the months not closed yet: this month's draft (its own
    usage only), and before it every earlier month still pending its close, oldest first."""

    current: Draft | None
    pending: list[PendingMonth]
    month: date  # the current UTC month
    error: str = ""  # why no preview could be built (then `current` is None; logged, not shown)

    @property
    def summary(self) -> list[SummaryLine]:
        return lines_summary(self.current.built.lines) if self.current else []

    @property
    def grouped(self) -> GroupedStatement | None:
        return grouped(self.current.built.lines) if self.current else None


def statement_preview(workspace: Workspace, *, now: datetime | None = None) -> Preview:
    """This month's draft and every earlier month's pending statement (billing.drafts
    .statement_preview, E4): in the grace window between the 1st and the scheduled close, last
    month is its own pending statement, never late usage on this month's draft."""
    now = now or clock.now()
    month = month_start(clock.utc_today(now))
    try:
        *pending, current = drafts.statement_preview(workspace, now=now)
    except CloseRefused as exc:
        logger.warning("No statement preview for %s: %s", workspace.slug, exc)
        return Preview(None, [], month, error=str(exc))
    return Preview(
        current=current,
        pending=[
            PendingMonth(draft, closes_at=scheduled_close(draft.period), overdue=scheduled_close(draft.period) <= now)
            for draft in pending
        ],
        month=month,
    )


# --- The short version of a statement ---------------------------------------------------------------


@dataclass(frozen=True)
class SummaryLine:
    label: str
    lines: int  # how many statement lines it sums
    amount: Decimal  # USD, 6 dp


GROUPED_LINES = {"usage": "Usage", "late_usage": "Late usage (earlier months' events that arrived after they closed)"}


def lines_summary(lines) -> list[SummaryLine]:
    """A statement's lines in PRODUCT.md's order, usage (and late usage) summed into one row
    each, every discount, credit and fee as itself: the short version above the long list."""
    summary: list[SummaryLine] = []
    position: dict[str, int] = {}
    for line in lines:
        if line.kind not in GROUPED_LINES:
            summary.append(SummaryLine(line.description, 1, line.amount))
            continue
        if line.kind not in position:
            position[line.kind] = len(summary)
            summary.append(SummaryLine(GROUPED_LINES[line.kind], 0, ZERO))
        item = summary[position[line.kind]]
        summary[position[line.kind]] = SummaryLine(item.label, item.lines + 1, item.amount + line.amount)
    return summary
