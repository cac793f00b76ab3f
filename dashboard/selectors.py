"""Reads behind the dashboard's pages.

Spend comes from the daily rollups (usage.selectors.usage_summary), never from a scan of raw
events, so the overview costs the same for a thousand events as for millions. Rollup days and
billing months are UTC; only timestamps are shown in the workspace's time zone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from billing import drafts
from billing.drafts import Draft
from billing.errors import CloseRefused
from billing.models import CloseRun, PaymentAttempt, Plan, Statement
from billing.selectors import plan_for_period

# The budgets app: month-to-date spend, forecast and budgets (budgets.selectors).
from budgets.models import Alert, Budget
from budgets.selectors import (
    FORECAST_METHOD,
    Forecast,
    alerts_of,
    budgets_of,
    budgets_status,
    workspace_forecast,
)
from core.money import ZERO, from_micros
from core.periods import month_start, next_month
from usage.models import DailyRollup, UsageEvent
from usage.selectors import UsageSummary, usage_summary
from workspaces.models import ApiKey, Membership, Workspace

from .csv_export import money
from .forms import Cursor, Period

logger = logging.getLogger(__name__)



def clock() -> datetime:
    """The dashboard's "now": every page reads the time through here (tests replace it)."""
    return timezone.now()


def utc_today(now: datetime | None = None) -> date:
    return (now or clock()).astimezone(dt_timezone.utc).date()


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)


# --- Overview ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetProgress:
    budget: Budget
    spend: Decimal  # USD, month to date, of the budget's scope
    forecast: Decimal  # USD, projected month end

    @property
    def percent(self) -> Decimal:
        if not self.budget.amount:
            return Decimal(0)
        return (self.spend / self.budget.amount * 100).quantize(Decimal("0.1"))

    @property
    def forecast_percent(self) -> Decimal:
        if not self.budget.amount:
            return Decimal(0)
        return (self.forecast / self.budget.amount * 100).quantize(Decimal("0.1"))

    @property
    def scope(self) -> str:
        key = self.budget.api_key
        return f"API key {key.name}" if key is not None else "Whole workspace"


@dataclass(frozen=True)
class FreeAllowance:
    credit: Decimal  # USD a month, the plan's free tier
    used: Decimal  # USD, month to date at list price
    plan: str

    @property
    def left(self) -> Decimal:
        return max(self.credit - self.used, ZERO)

    @property
    def percent_used(self) -> Decimal:
        if not self.credit:
            return Decimal(100)
        return min(self.used / self.credit * 100, Decimal(100)).quantize(Decimal("0.1"))


@dataclass(frozen=True)
class Overview:
    period: Period
    month: date  # the current UTC month (its 1st)
    today: date  # UTC
    forecast: Forecast  # this month's spend and month-end forecast
    forecast_method: str
    budgets: list[BudgetProgress]
    allowance: FreeAllowance
    last_statement: Statement | None
    daily: UsageSummary  # group_by day, feature
    by_model: UsageSummary
    by_resolution: UsageSummary
    by_steps: UsageSummary
    by_key: UsageSummary

    @property
    def includes_current_month(self) -> bool:
        return self.period.start <= self.today and self.period.end >= self.month


def overview(workspace: Workspace, period: Period, *, now: datetime | None = None) -> Overview:
    """Everything the overview shows: a fixed number of indexed reads of the rollups (five
    summaries of the period, the month for the forecast and budgets), the plan, the last statement."""
    now = now or clock()
    today = utc_today(now)
    month = month_start(today)

    def summary(*group_by: str) -> UsageSummary:
        return usage_summary(workspace=workspace, start=period.start, end=period.end, group_by=group_by)

    forecast = workspace_forecast(workspace, now=now)
    budgets = budgets_progress(workspace, now=now)
    plan: Plan = plan_for_period(workspace, month)
    return Overview(
        period=period,
        month=month,
        today=today,
        forecast=forecast,
        forecast_method=FORECAST_METHOD,
        budgets=budgets,
        allowance=FreeAllowance(credit=plan.free_tier_credit, used=forecast.spend, plan=plan.name),
        last_statement=last_statement(workspace),
        daily=summary("day", "feature"),
        by_model=summary("model"),
        by_resolution=summary("resolution"),
        by_steps=summary("steps"),
        by_key=summary("api_key"),
    )


def budgets_progress(workspace: Workspace, *, now: datetime | None = None) -> list[BudgetProgress]:
    """The workspace's budgets with this month's spend and forecast of each one's scope: the
    workspace-wide ones first, smallest first."""
    progress = [
        BudgetProgress(status.budget, status.forecast.spend, status.forecast.forecast)
        for status in budgets_status(list(budgets_of(workspace)), now=now or clock())
    ]
    progress.sort(key=lambda b: (b.budget.api_key_id is not None, b.budget.amount, b.budget.pk))
    return progress


def budget_of(workspace: Workspace, budget_id: int) -> Budget | None:
    return budgets_of(workspace).filter(pk=budget_id).first()


def alerts_history(workspace: Workspace, *, limit: int = 50) -> list[Alert]:
    """The newest alerts with the delivery status of each channel."""
    return alerts_of(workspace, limit=limit)


def last_statement(workspace: Workspace) -> Statement | None:
    return (
        Statement.objects.filter(workspace=workspace)
        .exclude(status=Statement.Status.VOID)
        .order_by("-period", "-pk")
        .first()
    )


# --- Usage: events, rollups, CSV -----------------------------------------------------------------


def _events(workspace: Workspace, filters: dict) -> QuerySet[UsageEvent]:
    events = UsageEvent.objects.filter(
        workspace=workspace,
        occurred_at__gte=_day_start(filters["start"]),
        occurred_at__lt=_day_start(filters["end"] + timedelta(days=1)),
    )
    if filters.get("feature"):
        events = events.filter(feature=filters["feature"])
    if filters.get("model"):
        events = events.filter(model=filters["model"])
    if filters.get("api_key_id"):
        events = events.filter(api_key_id=filters["api_key_id"])
    return events


def _rollups(workspace: Workspace, filters: dict) -> QuerySet[DailyRollup]:
    rollups = DailyRollup.objects.filter(workspace=workspace, day__gte=filters["start"], day__lte=filters["end"])
    if filters.get("feature"):
        rollups = rollups.filter(feature=filters["feature"])
    if filters.get("model"):
        rollups = rollups.filter(model=filters["model"])
    if filters.get("api_key_id"):
        rollups = rollups.filter(api_key_id=filters["api_key_id"])
    return rollups


@dataclass(frozen=True)
class EventsPage:
    events: list[UsageEvent]
    next_cursor: str | None  # "<occurred_at ISO>~<id>" of the last row, when there are more


def events_page(workspace: Workspace, filters: dict, *, before: Cursor | None = None, limit: int = 50) -> EventsPage:
    """Newest first, `limit` at a time, by keyset (occurred_at, id): page 1,000 costs what page 1
    costs (the (workspace, occurred_at) index), unlike OFFSET. `before` comes parsed and bounded
    (dashboard.forms.CursorField)."""
    events = _events(workspace, filters).select_related("api_key")
    if before is not None:
        moment, pk = before.occurred_at, before.pk
        events = events.filter(Q(occurred_at__lt=moment) | Q(occurred_at=moment, pk__lt=pk))
    rows = list(events.order_by("-occurred_at", "-pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1].occurred_at.isoformat()}~{rows[-1].pk}" if more and rows else None
    return EventsPage(rows, next_cursor)


def rollups_queryset(workspace: Workspace, filters: dict) -> QuerySet[DailyRollup]:
    return _rollups(workspace, filters).select_related("api_key").order_by(
        "-day", "feature", "model", "steps", "width", "height", "api_key_id", "pk"
    )


@dataclass(frozen=True)
class ExportHint:
    events: int  # rows of the events CSV
    rollups: int  # rows of the rollups CSV
    amount: Decimal  # USD, list price, of the range

    @property
    def events_bytes(self) -> int:
        return self.events * EVENT_CSV_ROW_BYTES


# About what one event takes in the CSV (ids, two timestamps, dimensions, prices).
EVENT_CSV_ROW_BYTES = 170


def export_hint(workspace: Workspace, filters: dict) -> ExportHint:
    """How big an export will be, from the rollups (their `events` counts): no scan of events."""
    totals = _rollups(workspace, filters).aggregate(events=Sum("events"), rows=Count("pk"), micros=Sum("amount_micros"))
    return ExportHint(int(totals["events"] or 0), int(totals["rows"] or 0), from_micros(int(totals["micros"] or 0)))


EVENT_CSV_HEADER = (
    "event_id", "occurred_at_utc", "received_at_utc", "api_key", "feature", "model", "steps", "width", "height",
    "composition_control", "spot", "quantity", "unit_price_usd", "amount_usd",
)  # fmt: skip
ROLLUP_CSV_HEADER = (
    "day_utc", "api_key", "feature", "model", "steps", "width", "height", "composition_control", "spot",
    "unit_price_usd", "quantity", "amount_usd", "events",
)  # fmt: skip
CSV_CHUNK = 2000


def _key_prefixes(workspace: Workspace) -> dict[int, str]:
    return {key.pk: key.display_prefix for key in ApiKey.objects.filter(workspace=workspace).only("pk", "prefix")}


def _iso(moment: datetime) -> str:
    return moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")


def events_csv_rows(workspace: Workspace, filters: dict) -> Iterator[tuple]:
    """Every event of the range, oldest first, read through a server-side cursor (PostgreSQL) in
    chunks of CSV_CHUNK rows: memory stays flat however many millions there are. Text as `str`,
    amounts as `Decimal`, counts as `int`: dashboard.csv_export neutralises the text only."""
    keys = _key_prefixes(workspace)
    yield EVENT_CSV_HEADER
    rows = (
        _events(workspace, filters)
        .order_by("occurred_at", "pk")
        .values_list(
            "event_id", "occurred_at", "received_at", "api_key_id", "feature", "model", "steps", "width", "height",
            "composition_control", "spot", "quantity", "unit_price", "amount",
        )  # fmt: skip
        .iterator(chunk_size=CSV_CHUNK)
    )
    for (event_id, occurred, received, key_id, feature, model, steps, width, height, comp, spot, quantity,
         unit_price, amount) in rows:  # fmt: skip
        yield (
            event_id, _iso(occurred), _iso(received), keys.get(key_id, ""), feature, model, steps or "",
            width or "", height or "", bool(comp), bool(spot), quantity, money(unit_price), money(amount),
        )  # fmt: skip


def rollups_csv_rows(workspace: Workspace, filters: dict) -> Iterator[tuple]:
    keys = _key_prefixes(workspace)
    yield ROLLUP_CSV_HEADER
    rows = (
        _rollups(workspace, filters)
        .order_by("day", "feature", "model", "steps", "width", "height", "api_key_id", "pk")
        .values_list(
            "day", "api_key_id", "feature", "model", "steps", "width", "height", "composition_control", "spot",
            "unit_price_micros", "quantity", "amount_micros", "events",
        )  # fmt: skip
        .iterator(chunk_size=CSV_CHUNK)
    )
    for day, key_id, feature, model, steps, width, height, comp, spot, unit, quantity, amount, events in rows:
        yield (
            day.isoformat(), keys.get(key_id, ""), feature, model, steps or "", width or "", height or "",
            bool(comp), bool(spot), from_micros(unit), quantity, from_micros(amount), events,
        )  # fmt: skip


# --- Statements ------------------------------------------------------------------------------------


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
        .prefetch_related("lines", "payment_attempts", "audit", "reissues")
        .first()
    )


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


@dataclass(frozen=True)
class Preview:
    """What the statements pages show of the months not closed yet: this month's draft (its own
    usage only), and before it every earlier month still pending its close, oldest first."""

    current: Draft | None
    pending: list[PendingMonth]
    month: date  # the current UTC month
    error: str = ""  # why no preview could be built (then `current` is None; logged, not shown)

    @property
    def summary(self) -> list[SummaryLine]:
        return lines_summary(self.current.built.lines) if self.current else []


def statement_preview(workspace: Workspace, *, now: datetime | None = None) -> Preview:
    """This month's draft and every earlier month's pending statement (billing.drafts
    .statement_preview, E4): in the grace window between the 1st and the scheduled close, last
    month is its own pending statement, never late usage on this month's draft."""
    now = now or clock()
    month = month_start(utc_today(now))
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


def last_attempt_error(statement: Statement) -> str:
    attempts = [a for a in statement.payment_attempts.all() if a.status == PaymentAttempt.Status.FAILED]
    return attempts[-1].error if attempts else ""


# --- Keys, members, payment method ------------------------------------------------------------------


def api_keys_of(workspace: Workspace) -> list[ApiKey]:
    """Active keys first (newest first), then revoked ones."""
    keys = list(ApiKey.objects.filter(workspace=workspace).order_by("-created_at", "-pk"))
    return [k for k in keys if k.revoked_at is None] + [k for k in keys if k.revoked_at is not None]


def members_of(workspace: Workspace) -> list[Membership]:
    order = {Membership.Role.OWNER: 0, Membership.Role.ADMIN: 1, Membership.Role.VIEWER: 2}
    members = list(Membership.objects.filter(workspace=workspace).select_related("user"))
    return sorted(members, key=lambda m: (order.get(m.role, 3), m.user.email or m.user.username))


# --- Staff -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceSpend:
    workspace: Workspace
    spend: Decimal  # USD, month to date at list price
    events: int


@dataclass(frozen=True)
class OverBudget:
    budget: Budget
    spend: Decimal

    @property
    def percent(self) -> Decimal:
        return (self.spend / self.budget.amount * 100).quantize(Decimal("0.1")) if self.budget.amount else Decimal(0)


# A close still "running" this long after it started lost its worker. A run keeps its first
# start through its retries (billing.tasks: 6, backing off from 5 minutes to 3 hours, about 6.5
# hours in all), so anything shorter would flag a retry in progress.
CLOSE_RUN_STUCK_AFTER = timedelta(hours=12)


@dataclass(frozen=True)
class CloseProblem:
    """A scheduled close that needs a look: failed for good, failing and retrying, or stuck."""

    run: CloseRun
    kind: str  # "failed" | "retrying" | "stuck"

    @property
    def month(self) -> str:
        return f"{self.run.period:%Y-%m}"

    @property
    def command(self) -> str:
        return f"python manage.py close_period {self.month}"


@dataclass(frozen=True)
class CloseRunRow:
    run: CloseRun

    @property
    def month(self) -> str:
        return f"{self.run.period:%Y-%m}"

    @property
    def caught_up(self) -> list[str]:
        """The earlier months this run closed first (they were still open)."""
        return [month for month in self.run.months_closed or () if month != self.month]


@dataclass(frozen=True)
class StaffOverview:
    month: date
    top: list[WorkspaceSpend]
    total_spend: Decimal
    active_workspaces: int
    failed_payments: list[Statement]
    over_budget: list[OverBudget]
    close_runs: list[CloseRunRow]  # the most recent first
    close_problems: list[CloseProblem]


def close_problems(*, now: datetime | None = None, limit: int = 20) -> list[CloseProblem]:
    """Close runs that failed (for good, or retrying) or are stuck running, newest first, unless a
    later run succeeded for that month or a later one: months close in order, so a successful
    close of a later month has closed every earlier one (billing.close, E6)."""
    now = now or clock()
    runs = list(
        CloseRun.objects.filter(status__in=[CloseRun.Status.FAILED, CloseRun.Status.RETRYING, CloseRun.Status.RUNNING])
        .order_by("-started_at", "-pk")[:limit]
    )
    succeeded = list(CloseRun.objects.filter(status=CloseRun.Status.SUCCEEDED).values_list("period", "started_at"))
    problems = []
    for run in runs:
        if any(period >= run.period and started >= run.started_at for period, started in succeeded):
            continue
        if run.status == CloseRun.Status.RUNNING:
            if now - run.started_at >= CLOSE_RUN_STUCK_AFTER:
                problems.append(CloseProblem(run, "stuck"))
            continue
        problems.append(CloseProblem(run, "failed" if run.status == CloseRun.Status.FAILED else "retrying"))
    return problems


def staff_overview(*, now: datetime | None = None, top: int = 15, runs: int = 12) -> StaffOverview:
    """This UTC month across all workspaces: one GROUP BY of the month's rollups per workspace;
    the recent close runs, and those that need a look."""
    now = now or clock()
    month = month_start(utc_today(now))
    spend_by_workspace = {
        row["workspace_id"]: (int(row["micros"] or 0), int(row["events"] or 0))
        for row in DailyRollup.objects.filter(day__gte=month, day__lt=next_month(month))
        .values("workspace_id")
        .annotate(micros=Sum("amount_micros"), events=Sum("events"))
        .order_by()
    }
    ranked = sorted(spend_by_workspace.items(), key=lambda item: -item[1][0])[:top]
    workspaces = Workspace.objects.in_bulk([pk for pk, _ in ranked])
    failed = list(
        Statement.objects.filter(status=Statement.Status.PAYMENT_FAILED)
        .select_related("workspace")
        .prefetch_related("payment_attempts")
        .annotate(last_attempt_at=Max("payment_attempts__finished_at"))
        .order_by("-period", "workspace__slug")[:100]
    )
    over = []
    for budget in Budget.objects.select_related("workspace", "api_key").order_by("workspace__slug", "pk"):
        if budget.api_key_id is None:
            micros = spend_by_workspace.get(budget.workspace_id, (0, 0))[0]
        else:
            micros = _key_month_micros(budget.workspace_id, budget.api_key_id, month)
        spend = from_micros(micros)
        if spend >= budget.amount:
            over.append(OverBudget(budget, spend))
    return StaffOverview(
        month=month,
        top=[WorkspaceSpend(workspaces[pk], from_micros(micros), events) for pk, (micros, events) in ranked if pk in workspaces],
        total_spend=from_micros(sum(micros for micros, _ in spend_by_workspace.values())),
        active_workspaces=len(spend_by_workspace),
        failed_payments=failed,
        over_budget=over,
        close_runs=[CloseRunRow(run) for run in CloseRun.objects.order_by("-started_at", "-pk")[:runs]],
        close_problems=close_problems(now=now),
    )


def _key_month_micros(workspace_id: int, api_key_id: int, month: date) -> int:
    total = DailyRollup.objects.filter(
        workspace_id=workspace_id, day__gte=month, day__lt=next_month(month), api_key_id=api_key_id
    ).aggregate(
        micros=Sum("amount_micros")
    )["micros"]
    return int(total or 0)
