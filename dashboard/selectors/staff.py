"""The staff overview's reads: this UTC month across all workspaces (top spenders, failed payments,
budgets reached), and the scheduled closes (the recent runs, and those that need a look)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Max, Sum

from billing.models import CloseRun, Statement
from budgets.models import Budget
from core.money import from_micros
from core.periods import month_start, next_month
from usage.models import DailyRollup
from workspaces.models import Workspace

from .. import clock


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
    now = now or clock.now()
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
    now = now or clock.now()
    month = month_start(clock.utc_today(now))
    spend_by_workspace = _month_spend_by_workspace(month)
    ranked = sorted(spend_by_workspace.items(), key=lambda item: -item[1][0])[:top]
    workspaces = Workspace.objects.in_bulk([pk for pk, _ in ranked])
    failed = _failed_payments()
    over = _over_budget(spend_by_workspace, month)
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


def _month_spend_by_workspace(month: date) -> dict[int, tuple[int, int]]:
    """{workspace id: (micro-dollars, events)} of the month, from one GROUP BY of its rollups."""
    return {
        row["workspace_id"]: (int(row["micros"] or 0), int(row["events"] or 0))
        for row in DailyRollup.objects.filter(day__gte=month, day__lt=next_month(month))
        .values("workspace_id")
        .annotate(micros=Sum("amount_micros"), events=Sum("events"))
        .order_by()
    }


def _failed_payments() -> list[Statement]:
    return list(
        Statement.objects.filter(status=Statement.Status.PAYMENT_FAILED)
        .select_related("workspace")
        .prefetch_related("payment_attempts")
        .annotate(last_attempt_at=Max("payment_attempts__finished_at"))
        .order_by("-period", "workspace__slug")[:100]
    )


def _over_budget(spend_by_workspace: dict[int, tuple[int, int]], month: date) -> list[OverBudget]:
    """Every budget whose scope's month-to-date spend has reached its amount."""
    over = []
    for budget in Budget.objects.select_related("workspace", "api_key").order_by("workspace__slug", "pk"):
        if budget.api_key_id is None:
            micros = spend_by_workspace.get(budget.workspace_id, (0, 0))[0]
        else:
            micros = _key_month_micros(budget.workspace_id, budget.api_key_id, month)
        spend = from_micros(micros)
        if spend >= budget.amount:
            over.append(OverBudget(budget, spend))
    return over


def _key_month_micros(workspace_id: int, api_key_id: int, month: date) -> int:
    total = DailyRollup.objects.filter(
        workspace_id=workspace_id, day__gte=month, day__lt=next_month(month), api_key_id=api_key_id
    ).aggregate(
        micros=Sum("amount_micros")
    )["micros"]
    return int(total or 0)
