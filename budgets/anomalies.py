"""Spend anomaly alerts: each workspace's and each API key's daily spend judged against its own
recent history (budgets.anomaly), recorded once per (workspace, key, day) and told through the
budgets' alert channels.

Runs from the beat (config/schedule.py): hourly for today so far, and at 00:30 UTC for yesterday
whole. One grouped query reads the rollups of the last 36 days of every workspace with spend.

Who is judged, and with which threshold (a score, budgets.anomaly):
- the whole workspace, for every workspace with spend, with or without a budget: its workspace
  budgets' lowest `anomaly_threshold`; if it has workspace budgets and none has one, never; if it
  has none, SPEND_ANOMALY_THRESHOLD (4.0; 0 turns this default off);
- each API key with spend, with its own key budgets' lowest threshold, or, without a key budget,
  the workspace's rule; a key that is the workspace's only key with spend in the window is not
  judged on its own (its series is the workspace's: one spike, one alert).

The alert goes to the owners and admins by e-mail (unless every budget whose threshold applies has
e-mail off; with no budget, by e-mail) and to the webhooks of the budgets whose threshold applies,
through the budgets' deliveries (retries, signatures: budgets.delivery), as an Alert of kind
`anomaly`; and to the workspace's event stream (notifications.publish) where that app is
installed. Every notice goes through _notice.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.money import MONEY
from workspaces.contacts import owner_and_admin_emails

from . import anomaly
from .delivery import deliveries_enqueue
from .evaluation import _deliveries_create
from .models import Alert, Budget, SpendAnomaly, WebhookEndpoint
from .selectors import recent_daily_spend

logger = logging.getLogger(__name__)

# Days of history read before the day judged: five of each weekday (the seasonal baseline).
WINDOW_DAYS = anomaly.MAX_HISTORY_DAYS
EVENT_TYPE = "usage.anomaly"  # the event stream's type (budget webhooks call theirs "spend.anomaly")


def default_threshold() -> Decimal | None:
    """SPEND_ANOMALY_THRESHOLD: the threshold of workspaces without a workspace budget; None if 0."""
    value = Decimal(str(getattr(settings, "SPEND_ANOMALY_THRESHOLD", anomaly.DEFAULT_THRESHOLD)))
    return value if value > 0 else None


@dataclass(frozen=True)
class _Rule:
    """The threshold that applies to a series and the budgets whose channels are told."""

    threshold: Decimal
    budgets: tuple[Budget, ...] = ()  # empty: no budget, e-mail only

    @property
    def email(self) -> bool:
        return not self.budgets or any(budget.email for budget in self.budgets)


def _rule_of(budgets: Sequence[Budget]) -> _Rule | None:
    """The lowest anomaly threshold of these budgets (those that have it apply); None if off."""
    on = [budget for budget in budgets if budget.anomaly_threshold]
    if not on:
        return None
    threshold = min(budget.anomaly_threshold for budget in on)
    return _Rule(threshold, tuple(budget for budget in on if budget.anomaly_threshold == threshold))


@dataclass
class _Budgets:
    """Every budget of the workspaces judged, with its webhooks (one query each)."""

    of_workspace: dict[int, list[Budget]] = field(default_factory=lambda: defaultdict(list))
    of_key: dict[tuple[int, int], list[Budget]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, workspace_ids: set[int]) -> _Budgets:
        found = cls()
        for budget in Budget.objects.filter(workspace_id__in=workspace_ids).prefetch_related("webhooks").order_by("pk"):
            if budget.api_key_id is None:
                found.of_workspace[budget.workspace_id].append(budget)
            else:
                found.of_key[(budget.workspace_id, budget.api_key_id)].append(budget)
        return found

    def workspace_rule(self, workspace_id: int) -> _Rule | None:
        budgets = self.of_workspace.get(workspace_id)
        if not budgets:
            threshold = default_threshold()
            return None if threshold is None else _Rule(threshold)
        return _rule_of(budgets)

    def key_rule(self, workspace_id: int, api_key_id: int) -> _Rule | None:
        budgets = self.of_key.get((workspace_id, api_key_id))
        return _rule_of(budgets) if budgets else self.workspace_rule(workspace_id)


@dataclass
class CheckReport:
    day: date
    fraction: Decimal
    series: int = 0  # series judged (with enough history and spend that day)
    recorded: list[SpendAnomaly] = field(default_factory=list)


def day_fraction(now: datetime) -> Decimal:
    """The fraction of now's UTC day elapsed, 4 dp."""
    midnight = datetime.combine(now.astimezone(dt_timezone.utc).date(), time(), tzinfo=dt_timezone.utc)
    return (Decimal((now - midnight).total_seconds()) / Decimal(86400)).quantize(Decimal("0.0001"))


def anomalies_check_today(*, now: datetime | None = None) -> CheckReport:
    """The hourly check: today's spend so far, against the baseline pro-rated to the hour."""
    now = now or timezone.now()
    return anomalies_check(day=now.astimezone(dt_timezone.utc).date(), fraction=day_fraction(now), now=now)


def anomalies_check_yesterday(*, now: datetime | None = None) -> CheckReport:
    """The daily check (00:30 UTC): yesterday's whole spend."""
    now = now or timezone.now()
    return anomalies_check(day=now.astimezone(dt_timezone.utc).date() - timedelta(days=1), now=now)


def anomalies_check(*, day: date, fraction: Decimal = Decimal(1), now: datetime | None = None) -> CheckReport:
    """Judge every workspace's and API key's spend on `day` (the `fraction` of it elapsed) and
    record, once per (workspace, key, day), those far above their history, sending their alerts.
    Idempotent: a series already recorded for the day is skipped (a unique index backs it)."""
    now = now or timezone.now()
    report = CheckReport(day, fraction)
    spend = recent_daily_spend(day - timedelta(days=WINDOW_DAYS), day)
    if not spend:
        return report
    series = _series(spend)
    told = set(SpendAnomaly.objects.filter(day=day).values_list("workspace_id", "api_key_id"))
    budgets = _Budgets.read({workspace_id for workspace_id, _ in series})
    for (workspace_id, api_key_id), daily in series.items():
        if (workspace_id, api_key_id) in told or daily.get(day, 0) <= 0:
            continue
        rule = budgets.workspace_rule(workspace_id) if api_key_id is None else budgets.key_rule(workspace_id, api_key_id)
        if rule is None:
            continue
        verdict = anomaly.judge(
            _history(daily, day), daily[day], day=day, threshold=rule.threshold, fraction=fraction
        )
        if verdict is None:
            continue
        report.series += 1
        if verdict.anomalous:
            recorded = _anomaly_record(workspace_id, api_key_id, day, fraction, verdict, rule, now)
            if recorded is not None:
                report.recorded.append(recorded)
    return report


def _series(spend: dict[tuple[int, int], dict[date, int]]) -> dict[tuple[int, int | None], dict[date, int]]:
    """Each workspace's total (key None) and each key's own series, except a key that is its
    workspace's only key with spend (the same series as the workspace's)."""
    keys_of: dict[int, int] = defaultdict(int)
    totals: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for (workspace_id, _), daily in spend.items():
        keys_of[workspace_id] += 1
        for day, micros in daily.items():
            totals[workspace_id][day] += micros
    series: dict[tuple[int, int | None], dict[date, int]] = {(w, None): dict(d) for w, d in totals.items()}
    for (workspace_id, api_key_id), daily in spend.items():
        if keys_of[workspace_id] > 1:
            series[(workspace_id, api_key_id)] = daily
    return series


def _history(daily: dict[date, int], day: date) -> list[int]:
    """The daily amounts before `day`, oldest first, from the series' first day with spend in
    the window (days before a workspace or key existed are not quiet days), zeros filled in."""
    before = [d for d in daily if d < day]
    if not before:
        return []
    first = min(before)
    return [daily.get(first + timedelta(days=n), 0) for n in range((day - first).days)]


def _micros_usd(value: Decimal) -> Decimal:
    return (value / Decimal(1_000_000)).quantize(MONEY)  # micro-dollars (a median may be x.5) to USD


def _anomaly_record(
    workspace_id: int, api_key_id: int | None, day: date, fraction: Decimal, verdict: anomaly.Verdict,
    rule: _Rule, now: datetime,
) -> SpendAnomaly | None:  # fmt: skip
    """Insert the anomaly and tell it (_notice), in one transaction; None if another run did."""
    try:
        with transaction.atomic():
            found = SpendAnomaly(
                workspace_id=workspace_id, api_key_id=api_key_id, day=day, amount=_micros_usd(verdict.amount),
                baseline=_micros_usd(verdict.baseline), mad=_micros_usd(verdict.mad), score=verdict.score,
                threshold=verdict.threshold, fraction=min(fraction, Decimal(1)), seasonal=verdict.seasonal,
                created_at=now,
            )  # fmt: skip
            found.save(force_insert=True)
            _notice(found, rule)
    except IntegrityError:
        return None
    return found


def _notice(found: SpendAnomaly, rule: _Rule) -> None:
    """Tell the workspace about an anomaly, inside the transaction that recorded it: an Alert of
    kind anomaly with one delivery per owner's/admin's address (if e-mail applies) and per webhook
    of the budgets whose threshold applies (enqueued after the commit, retried by budgets.delivery),
    and an event on the workspace's stream when the notifications app is installed."""
    endpoints: list[WebhookEndpoint] = [hook for budget in rule.budgets for hook in budget.webhooks.all()]
    alert = Alert(
        workspace_id=found.workspace_id, budget=rule.budgets[0] if rule.budgets else None,
        period=found.day.replace(day=1), kind=Alert.Kind.ANOMALY, spend=found.amount, created_at=found.created_at,
    )  # fmt: skip
    alert.save(force_insert=True)
    found.alert = alert
    found.save(update_fields=["alert"])
    recipients = owner_and_admin_emails(found.workspace_id) if rule.email else []
    deliveries = _deliveries_create(alert, recipients, endpoints)
    transaction.on_commit(functools.partial(deliveries_enqueue, [(d.pk, d.channel) for d in deliveries]))
    _publish(found)


def _publish(found: SpendAnomaly) -> None:
    import notifications  # the signed event stream (notifications sits below budgets)

    from .delivery import anomaly_payload

    scope = found.api_key_id or "workspace"
    notifications.publish(
        found.workspace_id, EVENT_TYPE, anomaly_payload(found), key=f"anomaly:{scope}:{found.day.isoformat()}",
        created=found.created_at,
    )  # fmt: skip

