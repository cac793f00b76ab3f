"""The overview's reads: a fixed number of indexed reads of the rollups, whatever the volume."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.db import DEFAULT_DB_ALIAS

from billing.models import Plan, Statement
from billing.selectors import plan_for_period
from budgets.models import SpendAnomaly
from budgets.selectors import FORECAST_METHOD, Forecast, anomalies_of, workspace_forecast
from core.money import ZERO
from core.periods import month_start
from usage.selectors import UsageSummary, usage_summary
from workspaces.models import Workspace

from .. import clock
from ..forms import Period
from ..models import UserPreference
from .budgets import BudgetProgress, budgets_progress
from .statements import MonthClosing


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
class Overview(MonthClosing):
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
    anomalies: list[SpendAnomaly] = field(default_factory=list)  # the period's, workspace and keys

    @property
    def includes_current_month(self) -> bool:
        return self.period.start <= self.today and self.period.end >= self.month


def overview(workspace: Workspace, period: Period, *, now: datetime | None = None) -> Overview:
    """Everything the overview shows: a fixed number of indexed reads of the rollups (five
    summaries of the period, the month for the forecast and budgets), the plan, the last statement."""
    now = now or clock.now()
    today = clock.utc_today(now)
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
        anomalies=anomalies_of(workspace, start=period.start, end=period.end),
    )


def last_statement(workspace: Workspace) -> Statement | None:
    return (
        Statement.objects.filter(workspace=workspace)
        .exclude(status=Statement.Status.VOID)
        .order_by("-period", "-pk")
        .first()
    )


def remembered_period(user) -> dict | None:
    """The period `user` chose last on the overview, as the period picker's data (for PeriodForm,
    which says whether it still holds), or None when they never chose one. Read from the primary:
    the choice may have been written a moment ago, by a GET that set no read-your-writes cookie."""
    stored = UserPreference.objects.using(DEFAULT_DB_ALIAS).filter(user=user).first()
    if stored is None or not stored.overview_period:
        return None
    return {"period": stored.overview_period, "start": stored.overview_start, "end": stored.overview_end}
