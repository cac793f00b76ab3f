"""Seeding the demo: its traffic sent through `usage.services.events_ingest` as it would have
arrived, its past months closed when the scheduler closes them, and a budget.

Time: the demo is seeded as if it had been running all along. Each event is received as real
traffic is, seconds to a few minutes after it occurred (`demo_arrival`: each key's reporter sends
its buffer every REPORT_EVERY), so ingestion runs in time order with `now` = that arrival, never
later than the real clock; prices and rollups are exactly what real traffic would produce. Each
month that is over is then closed when the scheduler would have closed it (`demo_close_at`:
BILLING_CLOSE_DAY, 02:00 UTC), oldest first; a month whose close time is still to come stays open.
So the statements are exactly what the real schedule would produce, and this month's preview holds
this month's usage only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from billing.close import period_close
from billing.errors import CloseRefused
from billing.models import BillingProfile, Statement
from billing.payment_report import Charge
from budgets.models import Budget, default_thresholds
from budgets.services import budget_create
from core.money import ZERO
from core.periods import current_period, month_start, months_between, next_month, previous_month
from usage import partitions
from usage.models import UsageEvent
from usage.selectors import usage_summary
from usage.services import ACCEPTED, CONFLICT, DUPLICATE, MAX_BATCH, REJECTED, events_ingest
from workspaces.models import Workspace

from .accounts import DEMO_KEYS, DemoAccounts
from .payments import demo_statement_charge
from .traffic import DEMO_EVENT_PREFIX, demo_arrival, demo_events, growth_anchor

# The beat's "billing-close-previous-month" (config/schedule.py): settings.BILLING_CLOSE_DAY, 02:00 UTC.
CLOSE_HOUR = 2
DEMO_BUDGET = Decimal("400.00")  # USD a month: the demo's month-end forecast comes close to it


@dataclass
class SeedTally:
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    amount: Decimal = ZERO  # USD, 6 dp, list price of this span's events (new or not)

    def add(self, other: SeedTally) -> None:
        self.events += other.events
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.amount += other.amount


@dataclass
class WeekProgress:
    first_day: date
    last_day: date
    tally: SeedTally


@dataclass
class SeedReport:
    start: date
    end: date
    tally: SeedTally = field(default_factory=SeedTally)
    spend_by_month: list[tuple[str, Decimal]] = field(default_factory=list)  # from the rollups


class DemoSeedError(RuntimeError):
    """The generator produced an event that ingestion rejected: a bug in the demo."""


# --- Usage, through ingestion ----------------------------------------------------------------------


def _send(accounts: DemoAccounts, key_name: str, bodies: list[dict], now: datetime, tally: SeedTally) -> None:
    for start in range(0, len(bodies), MAX_BATCH):
        outcome = events_ingest(
            workspace=accounts.workspace,
            api_key=accounts.keys[key_name],
            raw_events=bodies[start : start + MAX_BATCH],
            now=now,
        )
        for result in outcome.results:
            if result.status == REJECTED:
                raise DemoSeedError(f"Demo event {result.event_id} was rejected: {result.errors}")
            tally.events += 1
            tally.accepted += result.status == ACCEPTED
            tally.duplicates += result.status == DUPLICATE
            tally.conflicts += result.status == CONFLICT
            if result.amount is not None:
                tally.amount += result.amount


def _stored_ids(workspace: Workspace, first_day: date, last_day: date) -> set[str]:
    """The demo event ids of these days already stored (ids sort by day: one index range)."""
    after = last_day + timedelta(days=1)
    return set(
        UsageEvent.objects.filter(
            workspace=workspace,
            event_id__gte=f"{DEMO_EVENT_PREFIX}-{first_day:%Y%m%d}-",
            event_id__lt=f"{DEMO_EVENT_PREFIX}-{after:%Y%m%d}-",
        ).values_list("event_id", flat=True)
    )


def _delivery_floor(workspace: Workspace, now: datetime) -> datetime | None:
    """The workspace's latest close (up to `now`). An event not stored yet cannot have been received
    before it: that close did not see it. This matters only when the demo was not seeded for a while
    and a month was closed meanwhile (the beat of a `make run` left running over the 2nd): the events
    of that gap are then received at that close, and billed as late usage, as they would be for real."""
    return Statement.objects.filter(workspace=workspace, finalized_at__lte=now).aggregate(
        latest=Max("finalized_at")
    )["latest"]


@dataclass
class _Week:
    """What one week of seeding needs to know besides its days."""

    accounts: DemoAccounts
    now: datetime  # the seeding's, UTC
    anchor: date  # growth_anchor
    floor: datetime | None  # _delivery_floor
    scale: float


def _week_seed(week: _Week, first_day: date, last_day: date) -> SeedTally:
    """Send the days `first_day`–`last_day`: events already stored again at `now`, by key; the new
    ones in arrival order, each batch with `now` = its arrival (at least the floor, at most `now`)."""
    week_now = min(week.now, datetime.combine(last_day, time.max, tzinfo=dt_timezone.utc))
    stored = _stored_ids(week.accounts.workspace, first_day, last_day)
    again: dict[str, list[dict]] = {name: [] for name in DEMO_KEYS}
    arriving: dict[tuple[datetime, str], list[dict]] = defaultdict(list)
    for event in demo_events(first_day, week_now, anchor=week.anchor, scale=week.scale):
        if event.body["event_id"] in stored:
            again[event.key_name].append(event.body)
            continue
        arrival = demo_arrival(event)
        if week.floor is not None and arrival < week.floor:
            arrival = week.floor
        arriving[(min(arrival, week.now), event.key_name)].append(event.body)
    tally = SeedTally()
    for key_name, bodies in again.items():
        _send(week.accounts, key_name, bodies, week.now, tally)
    # One transaction for the week's many small requests: a commit for each would make seeding
    # half as slow again (SQLite, the default three months: 10 s → 16 s).
    with transaction.atomic():
        for arrival, key_name in sorted(arriving):
            _send(week.accounts, key_name, arriving[(arrival, key_name)], arrival, tally)
    return tally


def demo_usage_seed(
    *,
    accounts: DemoAccounts,
    now: datetime,
    start: date,
    scale: float = 1.0,
    on_week: Callable[[WeekProgress], None] | None = None,
) -> SeedReport:
    """Send the demo's usage from `start` to `now` through `events_ingest`, a week at a time.

    Promises: nothing after `now`; each new event is sent in time order with `now` = its arrival
    (`demo_arrival`, capped at `now`; never before the workspace's latest close), together with the
    other events its key sends at that moment, so `received_at` is seconds to minutes after
    `occurred_at`; a re-run stores only what became due since (the events already stored are sent
    again in full batches and come back duplicates, or conflicts when their content changed)."""
    now = now.astimezone(dt_timezone.utc)
    workspace = accounts.workspace
    week = _Week(accounts, now, growth_anchor(workspace), _delivery_floor(workspace, now), scale)
    today = now.date()
    report = SeedReport(start=start, end=today)
    # On PostgreSQL the months the demo's traffic arrives in get their partitions first, as if the
    # daily upkeep had run all along (otherwise the rows wait in the DEFAULT one until it does).
    partitions.ensure(now=now, extra=months_between(month_start(start), month_start(today)))
    first_day = start
    while first_day <= today:
        last_day = min(first_day + timedelta(days=6), today)
        tally = _week_seed(week, first_day, last_day)
        report.tally.add(tally)
        if on_week is not None:
            on_week(WeekProgress(first_day, last_day, tally))
        first_day = last_day + timedelta(days=1)

    summary = usage_summary(workspace=workspace, start=start, end=today, group_by=("month",))
    report.spend_by_month = [(row["month"], row["amount"]) for row in summary.rows]
    return report


# --- Statements and a budget, so that the dashboard has history to show ---------------------------


def demo_close_at(period: date) -> datetime:
    """When the scheduler closes `period` (the 1st of a month): BILLING_CLOSE_DAY of the next month,
    CLOSE_HOUR:00 UTC."""
    following = next_month(period)
    return datetime(
        following.year, following.month, settings.BILLING_CLOSE_DAY, CLOSE_HOUR, tzinfo=dt_timezone.utc
    )


@dataclass
class DemoMonth:
    period: date  # the 1st of the month
    close_at: datetime  # when the scheduler closes it (demo_close_at)
    statement: Any = None  # its live statement; None when there was nothing to bill, or still open
    is_open: bool = False  # its close time is still to come: this month's preview shows it as pending
    refused: str = ""  # why billing refused to close it, if it did
    charge: Charge | None = None  # what charging it did, when asked to charge


def demo_history_close(*, workspace: Workspace, start: date, now: datetime, charge: bool = False) -> list[DemoMonth]:
    """Close each month of the demo that is over, at the moment the scheduler would have
    (demo_close_at), oldest first, and for the demo workspace only; with `charge` (the local Stripe
    simulator: demo.payments), charge each statement then too, as the month-end job does. A month
    whose close time is after `now` is left open, and a month already closed (or paid) is returned
    as it is, so this is safe to re-run."""
    months = []
    for period in months_between(month_start(start), previous_month(current_period(now))):
        month = DemoMonth(period, demo_close_at(period))
        if month.close_at > now:
            month.is_open = True
        else:
            try:
                period_close(period, only=workspace, now=month.close_at)
            except CloseRefused as exc:
                month.refused = str(exc)
            month.statement = (
                Statement.objects.filter(workspace=workspace, period=period)
                .exclude(status=Statement.Status.VOID)
                .first()
            )
            if charge and month.statement is not None:
                month.charge = demo_statement_charge(month.statement, at=month.close_at, now=now)
                month.statement.refresh_from_db()
        months.append(month)
    return months


def demo_billing_profile_ensure(*, workspace: Workspace) -> BillingProfile:
    """Billing details for the demo's invoices, when the workspace has none (an owner's edits stay)."""
    profile, _ = BillingProfile.objects.get_or_create(workspace=workspace, defaults={
        "legal_name": "Demo Studio Ltd", "address_line1": "12 Canvas Lane", "city": "London", "postal_code": "N1 9GU",
        "country": "GB", "tax_id": "GB123456789", "billing_emails": ["demo@meterboard.local"],
    })  # fmt: skip
    return profile


def demo_budget_ensure(*, workspace: Workspace) -> Budget:
    """A monthly workspace budget with the default thresholds and forecast alerts, when the
    workspace has none (an owner's own budgets are left alone)."""
    existing = Budget.objects.filter(workspace=workspace).order_by("pk").first()
    if existing is not None:
        return existing
    budget, _ = budget_create(workspace=workspace, amount=DEMO_BUDGET, thresholds=default_thresholds())
    return budget
