"""Which alerts a workspace's spend calls for, recorded once each with their deliveries; the
requests for an evaluation; test alerts.

An evaluation is requested after ingestion (budgets.spend), after a budget changes
(budgets.services.budget_changed) and by the beat's every-minute safety net
(evaluations_request_due); it runs as the task budgets.tasks.workspace_evaluate. Each alert is
inserted against a unique index, so of evaluations racing each other one records it, and only
that one enqueues its deliveries (budgets.delivery), after its commit.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.selectors import plan_for_period
from core.errors import ServiceError
from core.jobs import enqueue
from core.money import CURRENCY, decimal_text, to_micros
from core.periods import current_period
from notifications import publish
from workspaces.contacts import owner_and_admin_emails
from workspaces.models import Workspace

from . import counters
from .delivery import LOST_AFTER, deliveries_enqueue, workspace_lock
from .models import Alert, AlertDelivery, Budget, WebhookEndpoint
from .selectors import Forecast, MonthSpend, budgets_of, forecast_month, month_spend, workspaces_to_evaluate

logger = logging.getLogger(__name__)

# An evaluation task waiting longer than this in the queue is dropped (the beat asks again).
EVALUATION_EXPIRES = 5 * 60
# Test alerts a workspace may send in an hour (setting BUDGET_TEST_ALERTS_PER_HOUR).
TEST_ALERTS_PER_HOUR = 10
TEST_ALERT_WINDOW = timedelta(hours=1)
# PostgreSQL advisory lock class of a workspace's test alerts (pg_advisory_xact_lock): "mbta".
_LOCK_TEST_ALERTS = 0x6D62_7461


# --- Requests ----------------------------------------------------------------------------------


def evaluation_enqueue(workspace_id: int) -> None:
    """Enqueue an evaluation of the workspace (its pending mark is set: budgets.counters). If the
    broker is down, the mark is cleared so that the next change (or the beat) tries again."""
    try:
        enqueue(
            "budgets.tasks.workspace_evaluate",
            workspace_id,
            countdown=counters.evaluation_delay(),
            expires=EVALUATION_EXPIRES,
        )
    except Exception:
        logger.exception("budgets: could not enqueue the evaluation of workspace %s", workspace_id)
        counters.evaluation_pending_clear(workspace_id)


def evaluation_request(workspace_id: int) -> bool:
    """Enqueue an evaluation of the workspace's budgets unless one is pending. True if enqueued."""
    if counters.evaluation_pending_set(workspace_id):
        evaluation_enqueue(workspace_id)
        return True
    return False


def evaluations_request_due(*, now: datetime | None = None) -> int:
    """The beat's safety net (every minute): request an evaluation of every workspace with a
    budget (forecasts move with the calendar too) or an untold, used-up free allowance."""
    now = now or timezone.now()
    return sum(evaluation_request(pk) for pk in workspaces_to_evaluate(current_period(now)))


# --- Evaluating ----------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    workspace_id: int
    budgets: int = 0
    recorded: list[Alert] = field(default_factory=list)  # alerts this call inserted (and sends)


@dataclass
class _Month:
    """What one evaluation reads once: the workspace's spend this month, per key and day, and the
    alerts already recorded this month; its owners' and admins' addresses when first needed."""

    workspace: Workspace
    now: datetime
    period: date
    spend: MonthSpend
    told: set[tuple[int | None, str, int | None]]  # (budget id, kind, threshold)

    @classmethod
    def read(cls, workspace: Workspace, now: datetime) -> _Month:
        period = current_period(now)
        told = set(
            Alert.objects.filter(workspace=workspace, period=period)
            .exclude(kind=Alert.Kind.TEST)
            .values_list("budget_id", "kind", "threshold")
        )
        return cls(workspace, now, period, month_spend(workspace.pk, period), told)

    @functools.cached_property
    def recipients(self) -> list[str]:
        return owner_and_admin_emails(self.workspace.pk)


def workspace_evaluate(workspace_id: int, *, now: datetime | None = None) -> EvaluationReport:
    """Record, once, every alert the workspace's month-to-date spend and forecast call for:

    - for each budget and threshold T: `actual` when spend >= T% of the amount, else `forecast`
      when the budget has forecast alerts and the month-end forecast >= T%;
    - `free_allowance` when the workspace's spend reaches its plan's free tier credit.

    Each is inserted against a unique index: of evaluators racing each other one inserts it, and
    only that one enqueues its deliveries (after its commit). Safe to run at any time, any number
    of times; alerts only for the current UTC month."""
    report = EvaluationReport(workspace_id)
    workspace = Workspace.objects.filter(pk=workspace_id).first()
    if workspace is None:
        return report
    month = _Month.read(workspace, now or timezone.now())
    budgets = list(budgets_of(workspace))
    report.budgets = len(budgets)
    for budget in budgets:
        report.recorded += _budget_alerts_record(month, budget)
    report.recorded += _free_allowance_record(month)
    return report


def _crossed(budget: Budget, forecast: Forecast, threshold: int) -> str | None:
    """The kind of alert `threshold` calls for: ACTUAL once reached, else FORECAST (with forecast
    alerts on) once the forecast reaches it; None otherwise."""
    amount = to_micros(budget.amount)
    if forecast.spend_micros * 100 >= amount * threshold:
        return Alert.Kind.ACTUAL
    if budget.forecast_alerts and forecast.forecast_micros * 100 >= amount * threshold:
        return Alert.Kind.FORECAST
    return None


def _budget_alerts_record(month: _Month, budget: Budget) -> list[Alert]:
    forecast = forecast_month(month.spend.daily(budget.api_key_id), now=month.now)
    recorded = []
    for threshold in budget.thresholds:
        kind = _crossed(budget, forecast, threshold)
        if kind is None or (budget.pk, kind, threshold) in month.told:
            continue
        alert = _alert_record(
            Alert(
                workspace=month.workspace, budget=budget, period=month.period, kind=kind, threshold=threshold,
                budget_amount=budget.amount, spend=forecast.spend, forecast=forecast.forecast, created_at=month.now,
            ),
            recipients=month.recipients if budget.email else [],
            endpoints=list(budget.webhooks.all()),
        )  # fmt: skip
        if alert is not None:
            recorded.append(alert)
    return recorded


def _free_allowance_record(month: _Month) -> list[Alert]:
    """Once a month, when the workspace's spend reaches its plan's free tier credit."""
    if (None, Alert.Kind.FREE_ALLOWANCE, None) in month.told or not month.spend.total():
        return []  # nothing spent: no credit can be used up, and no plan needs reading
    credit = to_micros(plan_for_period(month.workspace, month.period).free_tier_credit)
    if credit <= 0 or month.spend.total() < credit:
        return []
    whole = forecast_month(month.spend.daily(), now=month.now)
    alert = _alert_record(
        Alert(
            workspace=month.workspace, period=month.period, kind=Alert.Kind.FREE_ALLOWANCE,
            spend=whole.spend, forecast=whole.forecast, created_at=month.now,
        ),
        recipients=month.recipients,
        endpoints=[],
    )  # fmt: skip
    return [] if alert is None else [alert]


def _alert_record(alert: Alert, *, recipients: Sequence[str], endpoints: Sequence[WebhookEndpoint]) -> Alert | None:
    """Insert the alert and its deliveries; None when another evaluation recorded it first."""
    try:
        with transaction.atomic():
            alert.save(force_insert=True)
            deliveries = _deliveries_create(alert, recipients, endpoints)
            _alert_publish(alert)
    except IntegrityError:
        return None
    transaction.on_commit(functools.partial(deliveries_enqueue, [(d.pk, d.channel) for d in deliveries]))
    return alert


# The event stream's type per alert kind (free-allowance notices and test alerts are not in it).
STREAM_TYPES = {Alert.Kind.ACTUAL: "budget.threshold_crossed", Alert.Kind.FORECAST: "budget.forecast_exceeded"}


def _alert_publish(alert: Alert) -> None:
    """Tell the event stream (notifications) of a budget alert, in the alert's transaction."""
    event_type = STREAM_TYPES.get(alert.kind)
    if event_type is None:
        return
    budget = alert.budget
    data = {
        "budget_id": alert.budget_id,
        "alert_id": alert.pk,
        "api_key": budget.api_key.display_prefix if budget is not None and budget.api_key_id else None,
        "period": f"{alert.period:%Y-%m}",
        "threshold": alert.threshold,
        "budget_amount": decimal_text(alert.budget_amount),
        "spend": decimal_text(alert.spend),
        "currency": CURRENCY,
    }
    if alert.kind == Alert.Kind.FORECAST:
        data["forecast"] = decimal_text(alert.forecast)
    publish(alert.workspace_id, event_type, data, key=f"alert:{alert.pk}", created=alert.created_at)


def _deliveries_create(
    alert: Alert, recipients: Sequence[str], endpoints: Sequence[WebhookEndpoint]
) -> list[AlertDelivery]:
    """One delivery per address and per endpoint, due now. Enqueued after the commit; if that
    never happens, the sweep finds them (requeue_at, budgets.delivery)."""
    due = {"next_attempt_at": alert.created_at, "requeue_at": alert.created_at + LOST_AFTER, "created_at": alert.created_at}
    rows = [
        AlertDelivery(alert=alert, channel=AlertDelivery.Channel.EMAIL, target=address, **due)
        for address in recipients
    ] + [
        AlertDelivery(alert=alert, channel=AlertDelivery.Channel.WEBHOOK, endpoint=endpoint, target=endpoint.url, **due)
        for endpoint in endpoints
    ]
    # One by one rather than bulk_create: the enqueued tasks need the ids on every database.
    for row in rows:
        row.save(force_insert=True)
    return rows


# --- Test alerts ---------------------------------------------------------------------------------


class TooManyTestAlerts(ServiceError):
    """The workspace sent BUDGET_TEST_ALERTS_PER_HOUR test alerts in the last hour: 429, with
    Retry-After the seconds until the next one may go. The message is for a person."""

    status = 429

    def __init__(self, limit: int, retry_after: int):
        self.limit = limit
        minutes = max(math.ceil(retry_after / 60), 1)
        super().__init__(
            f"At most {limit} test alert{'s' if limit != 1 else ''} an hour per workspace: "
            f"try again in {minutes} minute{'s' if minutes != 1 else ''}.",
            retry_after=retry_after,
        )


def hourly_test_alert_limit() -> int:
    return max(int(getattr(settings, "BUDGET_TEST_ALERTS_PER_HOUR", TEST_ALERTS_PER_HOUR)), 0)


@transaction.atomic
def alert_test_send(*, budget: Budget, now: datetime | None = None) -> Alert:
    """Send a test alert through every channel of the budget (not counted against thresholds).
    Raises TooManyTestAlerts once the workspace sent BUDGET_TEST_ALERTS_PER_HOUR in the last hour
    (a test alert may reach up to 10 webhooks and every owner and admin: not a way to flood them)."""
    now = now or timezone.now()
    limit = hourly_test_alert_limit()
    workspace_lock(_LOCK_TEST_ALERTS, budget.workspace_id)
    recent = list(
        Alert.objects.filter(workspace_id=budget.workspace_id, kind=Alert.Kind.TEST, created_at__gt=now - TEST_ALERT_WINDOW)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(recent) >= limit:
        frees_at = recent[len(recent) - limit] + TEST_ALERT_WINDOW if limit else now + TEST_ALERT_WINDOW
        raise TooManyTestAlerts(limit, max(math.ceil((frees_at - now).total_seconds()), 1))
    forecast = forecast_month(month_spend(budget.workspace_id, current_period(now)).daily(budget.api_key_id), now=now)
    alert = Alert.objects.create(
        workspace_id=budget.workspace_id, budget=budget, period=forecast.period, kind=Alert.Kind.TEST,
        budget_amount=budget.amount, spend=forecast.spend, forecast=forecast.forecast, created_at=now,
    )  # fmt: skip
    deliveries = _deliveries_create(
        alert, owner_and_admin_emails(budget.workspace_id) if budget.email else [], list(budget.webhooks.all())
    )
    transaction.on_commit(functools.partial(deliveries_enqueue, [(d.pk, d.channel) for d in deliveries]))
    return alert
