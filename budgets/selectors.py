"""Reads for budgets: month-to-date spend and its forecast, the allowance, budgets and alerts.

Spend is usage at list price as the daily rollups sum it (integer micro-dollars), over the UTC
calendar month [1st, next 1st): the same figures as the usage API, before plan discounts and the
free tier, which only a statement applies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from fractions import Fraction

from django.db.models import Min, OuterRef, Prefetch, QuerySet, Subquery, Sum
from django.utils import timezone

from billing.credits import credits_available
from billing.models import Plan
from billing.selectors import default_plan, plans_by_workspace
from core.money import from_micros, to_micros
from core.periods import current_period, next_month, period_bounds
from usage.models import DailyRollup
from workspaces.models import ApiKey, Workspace

from . import counters
from .models import Alert, AlertDelivery, Budget, SpendAnomaly

FORECAST_BASIS_DAYS = 7
FORECAST_METHOD = (
    "Month-to-date spend plus the average daily spend of the last 7 full UTC days (while fewer "
    "than 7 full days of the month have passed: of the month so far, counted as at least one day) "
    "times the days left in the month. Never below the month-to-date spend."
)


# --- Spend ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthSpend:
    """A workspace's spend in one UTC month, per API key and day (micro-dollars)."""

    period: date
    by_key_day: Mapping[tuple[int, date], int]

    def daily(self, api_key_id: int | None = None) -> dict[date, int]:
        """Per day, for the workspace (None) or one API key."""
        days: dict[date, int] = defaultdict(int)
        for (key_id, day), micros in self.by_key_day.items():
            if api_key_id is None or key_id == api_key_id:
                days[day] += micros
        return dict(days)

    def total(self, api_key_id: int | None = None) -> int:
        return sum(self.daily(api_key_id).values())


def month_spend(workspace_id: int, period: date) -> MonthSpend:
    """One indexed read of the month's rollups, grouped by key and day."""
    rows = (
        DailyRollup.objects.filter(workspace_id=workspace_id, day__gte=period, day__lt=next_month(period))
        .values("api_key_id", "day")
        .annotate(micros=Sum("amount_micros"))
        .order_by()
    )
    return MonthSpend(period, {(row["api_key_id"], row["day"]): int(row["micros"]) for row in rows})


# --- Forecast ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    period: date
    spend_micros: int  # month to date
    forecast_micros: int  # projected month end, >= spend_micros
    daily_rate_micros: int  # the run rate used
    basis_days: Decimal  # days the run rate averages
    remaining_days: Decimal  # days from now to the end of the month

    @property
    def spend(self) -> Decimal:
        return from_micros(self.spend_micros)

    @property
    def forecast(self) -> Decimal:
        return from_micros(self.forecast_micros)

    @property
    def daily_rate(self) -> Decimal:
        return from_micros(self.daily_rate_micros)


def _round_half_up(value: Fraction) -> int:
    return int((value * 2 + 1) // 2) if value >= 0 else -_round_half_up(-value)


def _days(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def forecast_month(daily: Mapping[date, int], *, now: datetime) -> Forecast:
    """The month-end projection of `now`'s UTC month from its daily spend (FORECAST_METHOD). Pure.

    Exact arithmetic (fractions of micro-dollars), rounded half-up to the micro-dollar once."""
    now = now.astimezone(dt_timezone.utc)
    period = current_period(now)
    start, end = period_bounds(period)
    spend = sum(micros for day, micros in daily.items() if period <= day < next_month(period))
    today = now.date()
    full_days = (today - period).days
    if full_days >= FORECAST_BASIS_DAYS:
        basis_days = Fraction(FORECAST_BASIS_DAYS)
        basis = sum(daily.get(today - timedelta(days=n), 0) for n in range(1, FORECAST_BASIS_DAYS + 1))
    else:
        basis_days = max(Fraction(int((now - start).total_seconds()), 86_400), Fraction(1))
        basis = spend
    remaining = max(Fraction(int((end - now).total_seconds()), 86_400), Fraction(0))
    rate = Fraction(basis) / basis_days
    forecast = max(spend + _round_half_up(rate * remaining), spend)
    return Forecast(
        period=period,
        spend_micros=spend,
        forecast_micros=forecast,
        daily_rate_micros=_round_half_up(rate),
        basis_days=_days(basis_days).quantize(Decimal("0.0001")),
        remaining_days=_days(remaining).quantize(Decimal("0.0001")),
    )


def workspace_forecast(workspace: Workspace, *, now: datetime | None = None) -> Forecast:
    now = now or timezone.now()
    return forecast_month(month_spend(workspace.pk, current_period(now)).daily(), now=now)


# --- The hard limit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allowance:
    allowed: bool
    spend: Decimal  # USD, month to date, of the binding budget's scope (else the workspace)
    budget: Decimal | None  # USD, the binding hard-limit budget
    remaining: Decimal | None  # USD, never negative
    reason: str | None
    binding: str | None = None  # whose limit binds: "workspace", "api_key", "credits", or None (no hard limit)

    @property
    def why(self) -> str:
        """The answer in one word, for the metrics: no_hard_limit, within_budget, credits_exhausted,
        or whose budget is reached."""
        if self.binding is None:
            return "no_hard_limit"
        if self.allowed:
            return "within_budget"
        return CREDITS_EXHAUSTED if self.binding == "credits" else f"{self.binding}_budget_reached"


# A prepaid-only plan's limit among the hard limits: the pseudo API key id 0 (no key has it), whose
# amount is the credit balance usable now; month-to-date spend at or above it answers
# `allowed: false` with reason `credits_exhausted`.
CREDITS_LIMIT = 0
CREDITS_EXHAUSTED = "credits_exhausted"


def allowance_for(api_key: ApiKey, *, now: datetime | None = None) -> Allowance:
    """May `api_key` spend more this month? No once any hard-limit budget over it (the
    workspace's, or this key's) is reached; the one with the least left is reported.

    Reads the month-to-date spend from the counters ingestion keeps and the hard limits from their
    cache, dropped whenever a budget changes (budgets.counters; without Redis: the database), so a
    crossing blocks the next call and raising the budget unblocks at once. No worker involved."""
    now = now or timezone.now()
    period = current_period(now)
    workspace_micros, key_micros, limits = counters.allowance_inputs(
        api_key.workspace_id, api_key.pk, period, load_limits=lambda: hard_limits(api_key.workspace_id)
    )
    binding = None
    for key_id, amount in limits:
        if key_id not in (None, CREDITS_LIMIT) and key_id != api_key.pk:
            continue
        spent = key_micros if key_id else workspace_micros
        left = amount - spent
        if binding is None or left < binding[0]:
            binding = (left, spent, amount, key_id)
    if binding is None:
        return Allowance(True, from_micros(workspace_micros), None, None, None)
    left, spent, amount, key_id = binding
    reason = None
    if key_id == CREDITS_LIMIT:
        return Allowance(
            allowed=left > 0, spend=from_micros(spent), budget=from_micros(amount), remaining=from_micros(max(left, 0)),
            reason=None if left > 0 else CREDITS_EXHAUSTED, binding="credits",
        )  # fmt: skip
    if left <= 0:
        whose = "This API key's" if key_id else "The workspace's"
        reason = (
            f"{whose} monthly budget of {from_micros(amount):.2f} USD is reached (hard limit): "
            f"{from_micros(spent)} USD spent in {period:%Y-%m}. Raise the budget to continue."
        )
    return Allowance(
        allowed=left > 0,
        spend=from_micros(spent),
        budget=from_micros(amount),
        remaining=from_micros(max(left, 0)),
        reason=reason,
        binding="api_key" if key_id else "workspace",
    )


def hard_limits(workspace_id: int) -> counters.Limits:
    """The workspace's hard-limit budgets: (API key id, or None for the workspace; amount micros),
    and on a prepaid-only plan (the one pricing this month) its credit balance (CREDITS_LIMIT)."""
    limits: counters.Limits = [
        (key_id, to_micros(amount))
        for key_id, amount in Budget.objects.filter(workspace_id=workspace_id, hard_limit=True)
        .values_list("api_key_id", "amount")
        .order_by("pk")
    ]
    now = timezone.now()
    if plans_by_workspace([workspace_id], current_period(now))[workspace_id].prepaid_only:
        balance = credits_available([workspace_id], now=now).get(workspace_id, Decimal(0))
        limits.append((CREDITS_LIMIT, to_micros(balance)))
    return limits


# --- Budgets, history ------------------------------------------------------------------


def budgets_of(workspace: Workspace) -> QuerySet[Budget]:
    return Budget.objects.filter(workspace=workspace).select_related("api_key").prefetch_related("webhooks")


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    forecast: Forecast


def budgets_status(budgets: list[Budget], *, now: datetime | None = None) -> list[BudgetStatus]:
    """Each budget with its scope's month-to-date spend and forecast (one read per workspace)."""
    now = now or timezone.now()
    period = current_period(now)
    spends: dict[int, MonthSpend] = {}
    statuses = []
    for budget in budgets:
        if budget.workspace_id not in spends:
            spends[budget.workspace_id] = month_spend(budget.workspace_id, period)
        daily = spends[budget.workspace_id].daily(budget.api_key_id)
        statuses.append(BudgetStatus(budget, forecast_month(daily, now=now)))
    return statuses


def _with_deliveries(alerts: QuerySet[Alert]) -> QuerySet[Alert]:
    return alerts.prefetch_related(Prefetch("deliveries", queryset=AlertDelivery.objects.order_by("pk")))


def alerts_of(workspace: Workspace, *, budget_id: int | None = None, limit: int = 100) -> list[Alert]:
    """The workspace's alerts, newest first, with their deliveries."""
    alerts = Alert.objects.filter(workspace=workspace)
    if budget_id is not None:
        alerts = alerts.filter(budget_id=budget_id)
    return list(_with_deliveries(alerts).order_by("-created_at", "-pk")[:limit])


def alert_detail(alert_id: int) -> Alert:
    return _with_deliveries(Alert.objects.filter(pk=alert_id)).get()


def workspaces_to_evaluate(period: date) -> list[int]:
    """The beat's safety net: every workspace with a budget, plus those whose spend this month
    reached the smallest free allowance of any plan and that were not told yet (one indexed SUM
    per workspace, not a scan of the month's rollups)."""
    ids = set(Budget.objects.values_list("workspace_id", flat=True).distinct())
    # The default plan may be a stand-in that is not stored (billing.selectors.default_plan): its
    # credit counts as well as every stored plan's.
    stored = Plan.objects.filter(free_tier_credit__gt=0).aggregate(credit=Min("free_tier_credit"))["credit"]
    smallest = min((c for c in (stored, default_plan().free_tier_credit) if c is not None and c > 0), default=None)
    if smallest is not None:
        spend = Subquery(
            DailyRollup.objects.filter(workspace_id=OuterRef("pk"), day__gte=period, day__lt=next_month(period))
            .order_by()
            .values("workspace_id")
            .annotate(micros=Sum("amount_micros"))
            .values("micros")
        )
        told = Alert.objects.filter(kind=Alert.Kind.FREE_ALLOWANCE, period=period).values("workspace_id")
        ids.update(
            Workspace.objects.exclude(pk__in=told)
            .annotate(spend=spend)
            .filter(spend__gte=to_micros(smallest))
            .values_list("pk", flat=True)
        )
    return sorted(ids)


# --- Spend anomalies -------------------------------------------------------------------------------


def recent_daily_spend(first: date, last: date) -> dict[tuple[int, int], dict[date, int]]:
    """Spend per (workspace, API key) and UTC day over [first, last], in micro-dollars, of every
    workspace with spend then: one grouped query over the rollups (their unique index starts with
    workspace and day). Days without spend are absent."""
    rows = (
        DailyRollup.objects.filter(day__gte=first, day__lte=last)
        .order_by()
        .values_list("workspace_id", "api_key_id", "day")
        .annotate(micros=Sum("amount_micros"))
    )
    series: dict[tuple[int, int], dict[date, int]] = defaultdict(dict)
    for workspace_id, api_key_id, day, micros in rows:
        series[(workspace_id, api_key_id)][day] = int(micros)
    return dict(series)


def anomalies_of(workspace: Workspace, *, start: date, end: date) -> list[SpendAnomaly]:
    """The workspace's spend anomalies on UTC days [start, end], oldest first (whole workspace
    before its keys)."""
    return list(
        SpendAnomaly.objects.filter(workspace=workspace, day__gte=start, day__lte=end)
        .select_related("api_key")
        .order_by("day", "api_key_id", "pk")
    )
