"""Writes for budgets: budgets and their webhooks, the ingestion hook, alert evaluation, test
alerts, and delivering an alert (one attempt per task, budgets.tasks).

Delivery schedule (RETRY_*): an alert is sent as soon as it is recorded; a failed attempt is
retried after 30 s, 1, 2, 4, 8, 16 and 32 minutes, then every 45 minutes, until 24 hours after
the alert; then the delivery is `failed`. Every attempt is a DeliveryAttempt row.

The schedule is kept in the database, never in a worker's memory, so that a worker's death loses
none of it: each attempt claims its delivery for its task's hard time limit plus CLAIM_MARGIN
(25 s for a webhook with the default 5 s deadline) and, as it starts, moves `next_attempt_at` to
when the next attempt is due should it never report back (30 s for the first); a failed attempt
sets it and its task ends. The sweep (deliveries_enqueue_due, beat every SWEEP_EVERY = 10 s)
enqueues every delivery due before its next run, with a countdown to its time, unless an attempt
holds it or a task is already coming for it (`requeue_at`: a task unclaimed LOST_AFTER = 30 s past
its time was lost with its worker). Worker deaths, measured with real workers killed (SIGKILL):
mid-POST, the alert is sent again ~31 s after the first try (twice in all, same
Meterboard-Delivery id: at least once); a retry due while its worker is dead goes on time.

Webhooks are sent by their own task on their own Celery queue (WEBHOOK_QUEUE, config/celery.py),
so that a slow receiver can never delay evaluations, charges or e-mail; each attempt has one
wall-clock deadline (WEBHOOK_TIMEOUT_SECONDS, budgets.webhooks.post), and a workspace has at most
WEBHOOK_CONCURRENCY_PER_WORKSPACE attempts in flight: over it, a delivery is deferred (re-queued
a few seconds later, never dropped). Test alerts are limited per workspace (TooManyTestAlerts).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.services import plan_for_period
from workspaces.models import ApiKey, Workspace

from . import counters, webhooks
from .emails import alert_email_send, alert_headline, dashboard_url
from .models import Alert, AlertDelivery, Budget, DeliveryAttempt, WebhookEndpoint
from .selectors import (
    alert_recipients,
    current_period,
    forecast_month,
    month_spend,
    usd_micros,
    workspaces_to_evaluate,
)

logger = logging.getLogger(__name__)

RETRY_FIRST_DELAY = timedelta(seconds=30)
RETRY_MAX_DELAY = timedelta(minutes=45)
RETRY_WINDOW = timedelta(hours=24)
MAX_WEBHOOK_TIMEOUT = 60.0
# The hard time limit of one attempt's task (budgets.tasks) is the attempt's own deadline plus
# this: the claim before and the outcome saved after (a few queries). A worker process still in
# the task then is killed by its pool.
ATTEMPT_OVERHEAD = 15
# An e-mail attempt: EMAIL_TIMEOUT bounds each socket operation, not the whole conversation;
# connecting, the SMTP dialogue and the message get this many of them.
EMAIL_TIMEOUTS_PER_ATTEMPT = 3
# An attempt holds its delivery (`claimed_until`) for its task's hard time limit plus this: the pool
# kills a task past its limit within about a second, and machines' clocks differ a little. So no
# other task claims a delivery whose attempt may still be sending, and a worker that dies
# mid-attempt frees it that soon (25 s for a webhook with the default 5 s deadline).
CLAIM_MARGIN = 5
# At most this many webhook attempts of one workspace in flight at once (setting of that name).
WEBHOOK_CONCURRENCY_PER_WORKSPACE = 2
# Test alerts a workspace may send in an hour (setting BUDGET_TEST_ALERTS_PER_HOUR).
TEST_ALERTS_PER_HOUR = 10
TEST_ALERT_WINDOW = timedelta(hours=1)
# PostgreSQL advisory lock classes (pg_advisory_xact_lock(class, workspace id)): "mbwd", "mbta".
_LOCK_WEBHOOK_SLOTS = 0x6D62_7764
_LOCK_TEST_ALERTS = 0x6D62_7461
# The sweep (deliveries_enqueue_due) runs this often (config/schedule.py) and enqueues, each with
# a countdown to its due time, the deliveries due before its next run.
SWEEP_EVERY = timedelta(seconds=10)
SWEEP_BATCH = 500  # deliveries a sweep enqueues at most; the next one takes the rest
# A task enqueued for a delivery and not claimed this long after it was due to start was lost (a
# worker died holding it, the broker lost it): the sweep enqueues another. Longer than a healthy
# queue ever waits; a duplicate task is harmless (it finds the delivery claimed or done). Each
# task lost in a row doubles the wait, up to LOST_AFTER_MAX, so that a queue nobody consumes
# (workers stopped for hours) gets a copy of each delivery every half hour, not every 30 s.
LOST_AFTER = timedelta(seconds=30)
LOST_AFTER_MAX = timedelta(minutes=30)
# A countdown ends this much after the due time, so that a task never runs just before it.
_COUNTDOWN_MARGIN = 0.25
# An evaluation task waiting longer than this in the queue is dropped (the beat asks again).
EVALUATION_EXPIRES = 5 * 60


# --- Budgets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once, in the answer that created the endpoint


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    id: int | None = None  # an existing endpoint of the budget to keep (with its secret)


def _endpoints_create(budget: Budget, urls: Sequence[str]) -> list[IssuedEndpoint]:
    issued = []
    for url in urls:
        secret = webhooks.secret_generate()
        issued.append(IssuedEndpoint(WebhookEndpoint.objects.create(budget=budget, url=url, secret=secret), secret))
    return issued


@transaction.atomic
def budget_create(
    *,
    workspace: Workspace,
    amount: Decimal,
    thresholds: Sequence[int],
    forecast_alerts: bool = True,
    hard_limit: bool = False,
    api_key: ApiKey | None = None,
    email: bool = True,
    webhook_urls: Sequence[str] = (),
) -> tuple[Budget, list[IssuedEndpoint]]:
    """Create a budget and its webhook endpoints (each with a new secret, returned once), then
    evaluate the workspace: a budget below this month's spend alerts within a minute.
    The caller checked the input (budgets.serializers, webhooks.url_target)."""
    if api_key is not None and api_key.workspace_id != workspace.pk:
        raise ValueError("The API key belongs to another workspace.")
    budget = Budget.objects.create(
        workspace=workspace,
        api_key=api_key,
        amount=amount,
        thresholds=sorted(set(thresholds)),
        forecast_alerts=forecast_alerts,
        hard_limit=hard_limit,
        email=email,
    )
    issued = _endpoints_create(budget, webhook_urls)
    budget_changed(workspace.pk)
    return budget, issued


@transaction.atomic
def budget_update(
    *, budget: Budget, changes: dict, webhooks_spec: Sequence[WebhookSpec] | None = None
) -> tuple[Budget, list[IssuedEndpoint]]:
    """Change some of amount, thresholds, forecast_alerts, hard_limit, api_key, email. With
    `webhooks_spec`, the budget's endpoints become exactly those: listed ids are kept (their URL may
    change, their secret stays), others are deleted, entries without an id are created.

    A hard limit reads the budget on every allowance call, so raising it unblocks at once.
    Thresholds already alerted this month stay alerted (at most one alert per threshold and month)."""
    allowed = {"amount", "thresholds", "forecast_alerts", "hard_limit", "api_key", "email"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"Cannot change {', '.join(sorted(unknown))}.")
    if "thresholds" in changes:
        changes = {**changes, "thresholds": sorted(set(changes["thresholds"]))}
    api_key = changes.get("api_key")
    if api_key is not None and api_key.workspace_id != budget.workspace_id:
        raise ValueError("The API key belongs to another workspace.")
    for name, value in changes.items():
        setattr(budget, name, value)
    budget.save()
    issued: list[IssuedEndpoint] = []
    if webhooks_spec is not None:
        keep = {spec.id: spec.url for spec in webhooks_spec if spec.id is not None}
        existing = {endpoint.pk: endpoint for endpoint in budget.webhooks.all()}
        unknown_ids = set(keep) - set(existing)
        if unknown_ids:
            raise ValueError(f"No webhook {sorted(unknown_ids)[0]} on this budget.")
        for pk, endpoint in existing.items():
            if pk not in keep:
                endpoint.delete()
            elif endpoint.url != keep[pk]:
                endpoint.url = keep[pk]
                endpoint.save(update_fields=["url"])
        issued = _endpoints_create(budget, [spec.url for spec in webhooks_spec if spec.id is None])
    budget_changed(budget.workspace_id)
    return budget, issued


@transaction.atomic
def budget_delete(*, budget: Budget) -> None:
    """Delete a budget and its endpoints; its alerts stay in the history (budget: null).
    Deliveries still waiting for a deleted endpoint are cancelled at their next attempt."""
    budget.delete()
    budget_changed(budget.workspace_id)


def budget_changed(workspace_id: int) -> None:
    """After the commit: drop the allowance's cached hard limits (so the next call reads the new
    amounts) and evaluate the workspace (a budget lowered below the spend alerts at once)."""
    transaction.on_commit(functools.partial(counters.limits_changed, workspace_id))
    transaction.on_commit(functools.partial(evaluation_request, workspace_id))


# --- The ingestion hook --------------------------------------------------------------------------


# --- Evaluation ---------------------------------------------------------------------------------


def _evaluation_enqueue(workspace_id: int) -> None:
    from . import tasks

    try:
        tasks.budgets_evaluate_workspace.apply_async(
            args=[workspace_id], countdown=counters.evaluation_delay(), expires=EVALUATION_EXPIRES
        )
    except Exception:  # the broker is down: let the next change (or the beat) try again
        logger.exception("budgets: could not enqueue the evaluation of workspace %s", workspace_id)
        counters.evaluation_pending_clear(workspace_id)


def evaluation_request(workspace_id: int) -> bool:
    """Enqueue an evaluation of the workspace's budgets unless one is pending. True if enqueued."""
    if counters.evaluation_pending_set(workspace_id):
        _evaluation_enqueue(workspace_id)
        return True
    return False


def evaluations_request_due(*, now: datetime | None = None) -> int:
    """The beat's safety net (every minute): request an evaluation of every workspace with a
    budget (forecasts move with the calendar too) or an untold, used-up free allowance."""
    now = now or timezone.now()
    return sum(evaluation_request(pk) for pk in workspaces_to_evaluate(current_period(now)))


@dataclass
class EvaluationReport:
    workspace_id: int
    budgets: int = 0
    recorded: list[Alert] = field(default_factory=list)  # alerts this call inserted (and sends)


def workspace_evaluate(workspace_id: int, *, now: datetime | None = None) -> EvaluationReport:
    """Record, once, every alert the workspace's month-to-date spend and forecast call for:

    - for each budget and threshold T: `actual` when spend >= T% of the amount, else `forecast`
      when the budget has forecast alerts and the month-end forecast >= T%;
    - `free_allowance` when the workspace's spend reaches its plan's free tier credit.

    Each is inserted against a unique index: of evaluators racing each other one inserts it, and
    only that one enqueues its deliveries (after its commit). Safe to run at any time, any number
    of times; alerts only for the current UTC month."""
    now = now or timezone.now()
    report = EvaluationReport(workspace_id)
    workspace = Workspace.objects.filter(pk=workspace_id).first()
    if workspace is None:
        return report
    period = current_period(now)
    budgets = list(
        Budget.objects.filter(workspace=workspace).select_related("api_key").prefetch_related("webhooks")
    )
    report.budgets = len(budgets)
    spend = month_spend(workspace.pk, period)
    told = set(
        Alert.objects.filter(workspace=workspace, period=period)
        .exclude(kind=Alert.Kind.TEST)
        .values_list("budget_id", "kind", "threshold")
    )
    recipients: list[str] | None = None
    for budget in budgets:
        forecast = forecast_month(spend.daily(budget.api_key_id), now=now)
        amount = usd_micros(budget.amount)
        for threshold in budget.thresholds:
            if forecast.spend_micros * 100 >= amount * threshold:
                kind = Alert.Kind.ACTUAL
            elif budget.forecast_alerts and forecast.forecast_micros * 100 >= amount * threshold:
                kind = Alert.Kind.FORECAST
            else:
                continue
            if (budget.pk, kind, threshold) in told:
                continue
            if recipients is None:
                recipients = alert_recipients(workspace.pk)
            alert = _alert_record(
                Alert(
                    workspace=workspace, budget=budget, period=period, kind=kind, threshold=threshold,
                    budget_amount=budget.amount, spend=forecast.spend, forecast=forecast.forecast, created_at=now,
                ),
                recipients=recipients if budget.email else [],
                endpoints=list(budget.webhooks.all()),
            )
            if alert is not None:
                report.recorded.append(alert)
    if (None, Alert.Kind.FREE_ALLOWANCE, None) not in told:
        credit = usd_micros(plan_for_period(workspace, period).free_tier_credit)
        total = spend.total()
        if credit > 0 and total >= credit:
            whole = forecast_month(spend.daily(), now=now)
            alert = _alert_record(
                Alert(
                    workspace=workspace, period=period, kind=Alert.Kind.FREE_ALLOWANCE,
                    spend=whole.spend, forecast=whole.forecast, created_at=now,
                ),
                recipients=alert_recipients(workspace.pk) if recipients is None else recipients,
                endpoints=[],
            )
            if alert is not None:
                report.recorded.append(alert)
    return report


def _alert_record(alert: Alert, *, recipients: Sequence[str], endpoints: Sequence[WebhookEndpoint]) -> Alert | None:
    """Insert the alert and its deliveries; None when another evaluation recorded it first."""
    try:
        with transaction.atomic():
            alert.save(force_insert=True)
            deliveries = _deliveries_create(alert, recipients, endpoints)
    except IntegrityError:
        return None
    transaction.on_commit(functools.partial(_deliveries_enqueue, [(d.pk, d.channel) for d in deliveries]))
    return alert


def _deliveries_create(
    alert: Alert, recipients: Sequence[str], endpoints: Sequence[WebhookEndpoint]
) -> list[AlertDelivery]:
    # Enqueued after the commit: if that never happens, the sweep finds them (requeue_at).
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


def delivery_enqueue(delivery_id: int, channel: str, *, countdown: float = 0) -> None:
    """Enqueue one attempt: webhooks on the webhooks queue (budgets.tasks.webhook_delivery_send),
    e-mails on the default one (alert_delivery_send). The caller records `requeue_at`."""
    from . import tasks

    task = tasks.webhook_delivery_send if channel == AlertDelivery.Channel.WEBHOOK else tasks.alert_delivery_send
    # A task still queued an hour after its time was long replaced by the sweep: drop it.
    task.apply_async(args=[delivery_id], countdown=countdown, expires=countdown + 3600)


def _deliveries_enqueue(deliveries: Sequence[tuple[int, str]]) -> None:
    for delivery_id, channel in deliveries:
        try:
            delivery_enqueue(delivery_id, channel)
        except Exception:  # the sweep enqueues it once the broker answers again (requeue_at)
            logger.exception("budgets: could not enqueue delivery %s", delivery_id)


def _lost_after(requeues: int) -> timedelta:
    return min(LOST_AFTER * 2 ** min(requeues, 16), LOST_AFTER_MAX)


def delivery_requeue(delivery_id: int, channel: str, at: datetime, *, now: datetime | None = None) -> None:
    """Enqueue an attempt to start at `at` (a deferred delivery), recorded so that the sweep does
    not take it for lost before then."""
    now = now or timezone.now()
    AlertDelivery.objects.filter(pk=delivery_id).update(requeue_at=at + LOST_AFTER)
    delivery_enqueue(delivery_id, channel, countdown=max((at - now).total_seconds(), 0) + _COUNTDOWN_MARGIN)


def _workspace_lock(lock_class: int, workspace_id: int) -> None:
    """Serialize, until the transaction ends, the callers of one workspace and lock class. On
    PostgreSQL an advisory lock (nothing else waits on it); SQLite's write transactions (IMMEDIATE,
    config/settings.py) are serialized already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [lock_class, workspace_id % 2**31])


class TooManyTestAlerts(Exception):
    """The workspace sent BUDGET_TEST_ALERTS_PER_HOUR test alerts in the last hour. `retry_after`:
    seconds until the next one may go. The API answers 429 with Retry-After; the message is for
    a person."""

    def __init__(self, limit: int, retry_after: int):
        self.limit, self.retry_after = limit, retry_after
        minutes = max(math.ceil(retry_after / 60), 1)
        super().__init__(
            f"At most {limit} test alert{'s' if limit != 1 else ''} an hour per workspace: "
            f"try again in {minutes} minute{'s' if minutes != 1 else ''}."
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
    _workspace_lock(_LOCK_TEST_ALERTS, budget.workspace_id)
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
    )
    deliveries = _deliveries_create(
        alert, alert_recipients(budget.workspace_id) if budget.email else [], list(budget.webhooks.all())
    )
    transaction.on_commit(functools.partial(_deliveries_enqueue, [(d.pk, d.channel) for d in deliveries]))
    return alert


# --- Delivery -------------------------------------------------------------------------------------


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 30 s doubling, at most RETRY_MAX_DELAY."""
    return min(RETRY_FIRST_DELAY * 2 ** max(attempts - 1, 0), RETRY_MAX_DELAY)


@dataclass(frozen=True)
class DeliveryResult:
    # The delivery's status after this call; "skipped" (not due, or held by another attempt) or
    # "deferred" (its workspace has WEBHOOK_CONCURRENCY_PER_WORKSPACE attempts in flight: call
    # again at retry_at, no attempt was made or counted).
    status: str
    retry_at: datetime | None = None  # when to call again
    give_up_at: datetime | None = None


def webhook_timeout() -> float:
    """WEBHOOK_TIMEOUT_SECONDS, the deadline of one attempt, kept within 0.1 to 60 s."""
    seconds = float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 5))
    return min(max(seconds, 0.1), MAX_WEBHOOK_TIMEOUT)


def attempt_time_limit(channel: str) -> int:
    """The hard time limit (seconds) of the task making one attempt: the attempt's own deadline
    plus ATTEMPT_OVERHEAD. 20 s for a webhook (WEBHOOK_TIMEOUT_SECONDS 5), 45 s for an e-mail
    (EMAIL_TIMEOUT 10) with the defaults."""
    if channel == AlertDelivery.Channel.WEBHOOK:
        deadline = webhook_timeout()
    else:
        deadline = EMAIL_TIMEOUTS_PER_ATTEMPT * float(getattr(settings, "EMAIL_TIMEOUT", None) or 10)
    return math.ceil(deadline) + ATTEMPT_OVERHEAD


def claim_length(time_limit: float) -> timedelta:
    """How long an attempt holds its delivery, given the hard time limit of the task making it."""
    return timedelta(seconds=time_limit + CLAIM_MARGIN)


def webhook_concurrency_per_workspace() -> int:
    return max(int(getattr(settings, "WEBHOOK_CONCURRENCY_PER_WORKSPACE", WEBHOOK_CONCURRENCY_PER_WORKSPACE)), 1)


def _defer_delay() -> timedelta:
    """How long a delivery over its workspace's cap waits: about one attempt's deadline (a slot
    is free by then), spread so that deferred deliveries do not come back all at once."""
    return timedelta(seconds=max(webhook_timeout(), 1.0) * random.uniform(0.5, 1.0))


_BUSY = object()  # _claim: the workspace has as many webhook attempts in flight as it may


# The `type` of a webhook's JSON (and its Meterboard-Event header), per alert kind.
EVENT_TYPES = {
    Alert.Kind.ACTUAL: "budget.threshold_reached",
    Alert.Kind.FORECAST: "budget.forecast_threshold_reached",
    Alert.Kind.FREE_ALLOWANCE: "free_allowance.used_up",
    Alert.Kind.TEST: "budget.test",
}


def alert_payload(alert: Alert) -> dict:
    """The JSON a webhook receives. Money as strings with 6 decimal places, USD."""
    budget = alert.budget

    def money(value: Decimal | None) -> str | None:
        return None if value is None else f"{value:.6f}"

    return {
        "id": alert.pk,
        "type": EVENT_TYPES[alert.kind],
        "created_at": alert.created_at.isoformat().replace("+00:00", "Z"),
        "workspace": alert.workspace.slug,
        "period": f"{alert.period:%Y-%m}",
        "kind": alert.kind,
        "threshold": alert.threshold,
        "budget": None
        if budget is None
        else {
            "id": budget.pk,
            "amount": money(budget.amount),
            "api_key": budget.api_key.display_prefix if budget.api_key_id else None,
            "hard_limit": budget.hard_limit,
        },
        "budget_amount": money(alert.budget_amount),
        "spend": money(alert.spend),
        "forecast": money(alert.forecast),
        "currency": "USD",
        "message": alert_headline(alert),
        "dashboard_url": dashboard_url(alert.workspace),
    }


_OPEN = (AlertDelivery.Status.PENDING, AlertDelivery.Status.RETRYING)


def _claim(delivery_id: int, now: datetime, time_limit: float | None):
    """Take the delivery for one attempt (saved STARTED) if it is due and nobody holds it: the
    (delivery, attempt); None if it is not due or held; _BUSY for a webhook whose workspace has
    WEBHOOK_CONCURRENCY_PER_WORKSPACE attempts in flight (claims not expired), counted under a
    per-workspace lock so that two claims cannot both take the last slot.

    The claim lasts the task's hard time limit (`time_limit`, by default the channel's
    attempt_time_limit) plus CLAIM_MARGIN, and moves `next_attempt_at` to when the next attempt
    is due should this one never report back (its worker died): the retry schedule is in the
    database from the start of every attempt. An attempt a dead worker left STARTED is marked
    abandoned; past the retry window, the delivery is failed instead of attempted again."""
    with transaction.atomic():
        due = AlertDelivery.objects.filter(pk=delivery_id, status__in=_OPEN, next_attempt_at__lte=now).filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
        )
        row = due.values("channel", "alert__workspace_id", "attempts", "created_at").first()
        if row is None:
            return None
        give_up_at = row["created_at"] + RETRY_WINDOW
        abandoned = DeliveryAttempt.objects.filter(delivery_id=delivery_id, outcome=DeliveryAttempt.Outcome.STARTED)
        if now >= give_up_at and abandoned.exists():  # the last attempt of the window never ended
            abandoned.update(outcome=DeliveryAttempt.Outcome.ABANDONED, error="The worker stopped during this attempt.")
            due.update(status=AlertDelivery.Status.FAILED, next_attempt_at=None, claimed_until=None, requeue_at=None,
                       last_error="The worker stopped during the last attempt.")  # fmt: skip
            logger.warning("budgets: gave up delivery %s, its last attempt was abandoned", delivery_id)
            return None
        if row["channel"] == AlertDelivery.Channel.WEBHOOK:
            workspace_id = row["alert__workspace_id"]
            _workspace_lock(_LOCK_WEBHOOK_SLOTS, workspace_id)
            in_flight = (
                AlertDelivery.objects.filter(
                    alert__workspace_id=workspace_id, channel=AlertDelivery.Channel.WEBHOOK, claimed_until__gte=now
                )
                .exclude(pk=delivery_id)
                .count()
            )
            if in_flight >= webhook_concurrency_per_workspace():
                return _BUSY
        attempts = row["attempts"] + 1
        claimed = due.filter(attempts=row["attempts"]).update(
            claimed_until=now + claim_length(time_limit or attempt_time_limit(row["channel"])),
            attempts=attempts,
            next_attempt_at=min(now + retry_delay(attempts), give_up_at),
            requeue_at=None,
            requeues=0,
        )
        if not claimed:
            return None
        delivery = AlertDelivery.objects.select_related(
            "alert__workspace", "alert__budget__api_key", "endpoint"
        ).get(pk=delivery_id)
        abandoned.update(outcome=DeliveryAttempt.Outcome.ABANDONED, error="The worker stopped during this attempt.")
        attempt = DeliveryAttempt.objects.create(delivery=delivery, number=delivery.attempts, started_at=now)
    return delivery, attempt


def _send(delivery: AlertDelivery, *, webhook_deadline: float) -> webhooks.PostResult:
    if delivery.channel == AlertDelivery.Channel.EMAIL:
        try:
            alert_email_send(delivery.alert, delivery.target)
        except TimeoutError:
            return webhooks.PostResult("timeout", error="The mail server did not answer in time.")
        except Exception as exc:  # smtplib and socket errors: retried
            return webhooks.PostResult("error", error=f"{type(exc).__name__}: {exc}"[:500])
        return webhooks.PostResult("ok")
    body = json.dumps(alert_payload(delivery.alert), separators=(",", ":")).encode()
    return webhooks.post(
        delivery.endpoint.url,
        delivery.endpoint.secret,
        body,
        timeout=webhook_deadline,
        allow_private=getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False),
        headers={
            "Meterboard-Delivery": str(delivery.pk),
            "Meterboard-Event": EVENT_TYPES[delivery.alert.kind],
        },
    )


def delivery_attempt(delivery_id: int, *, now: datetime | None = None, time_limit: float | None = None) -> DeliveryResult:
    """Make one attempt at a delivery if it is due and no other attempt holds it; log it; settle
    the delivery (delivered, retrying at a time, or failed after RETRY_WINDOW).

    `time_limit`: the hard time limit of the task calling (budgets.tasks), which the claim
    outlasts and a webhook's deadline fits in; by default the channel's attempt_time_limit().

    Safe to call twice for the same delivery at once (the claim is an atomic UPDATE, held longer
    than a delivery task may run): one sends. A webhook over its workspace's cap of attempts in
    flight is "deferred": nothing is sent or counted, the caller tries again at retry_at.
    At least once, not exactly once, if a worker dies after sending and before saving the
    outcome; receivers de-duplicate on the `Meterboard-Delivery` header (or the alert `id`)."""
    claimed = _claim(delivery_id, now or timezone.now(), time_limit)
    if claimed is None:
        return DeliveryResult("skipped")
    if claimed is _BUSY:
        created_at = AlertDelivery.objects.filter(pk=delivery_id).values_list("created_at", flat=True).first()
        retry_at = (now or timezone.now()) + _defer_delay()
        return DeliveryResult("deferred", retry_at, None if created_at is None else created_at + RETRY_WINDOW)
    delivery, attempt = claimed
    give_up_at = delivery.created_at + RETRY_WINDOW
    if delivery.channel == AlertDelivery.Channel.WEBHOOK and delivery.endpoint is None:
        result = webhooks.PostResult("refused", error="The webhook endpoint was removed.")
        status = AlertDelivery.Status.CANCELLED
    else:
        limit = time_limit or attempt_time_limit(delivery.channel)
        started = time.monotonic()
        result = _send(delivery, webhook_deadline=max(min(webhook_timeout(), limit - ATTEMPT_OVERHEAD), 0.1))
        attempt.duration_ms = int((time.monotonic() - started) * 1000)
        status = AlertDelivery.Status.DELIVERED if result.outcome == "ok" else AlertDelivery.Status.RETRYING
    finished = now or timezone.now()
    retry_at = None
    if status == AlertDelivery.Status.RETRYING:
        retry_at = finished + retry_delay(delivery.attempts)
        if retry_at > give_up_at:
            status, retry_at = AlertDelivery.Status.FAILED, None
    attempt.outcome = result.outcome
    attempt.http_status = result.http_status
    attempt.error = result.error
    with transaction.atomic():
        attempt.save(update_fields=["outcome", "http_status", "error", "duration_ms"])
        AlertDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            claimed_until=None,
            next_attempt_at=retry_at,
            delivered_at=finished if status == AlertDelivery.Status.DELIVERED else None,
            last_error=result.error,
        )
    if status == AlertDelivery.Status.FAILED:
        logger.warning("budgets: gave up delivering alert %s to %s: %s", delivery.alert_id, delivery.target, result.error)
    return DeliveryResult(status, retry_at, give_up_at)


def deliveries_enqueue_due(*, now: datetime | None = None) -> int:
    """The sweep (beat, every SWEEP_EVERY): enqueue every delivery due before the next sweep that
    no attempt holds (its claim, if any, expired) and no task is coming for (none was enqueued
    since its last attempt, or the one enqueued was lost: still unclaimed at `requeue_at`), with
    a countdown to its due time. This is how retries happen, and how a delivery whose task or
    worker died is found again.
    At most SWEEP_BATCH a run, the longest due first; rows another sweep holds are skipped.
    Returns how many were enqueued."""
    now = now or timezone.now()
    horizon = now + SWEEP_EVERY
    with transaction.atomic():
        rows = list(
            AlertDelivery.objects.select_for_update(skip_locked=True)
            .filter(status__in=_OPEN, next_attempt_at__lte=horizon)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .filter(Q(requeue_at__isnull=True) | Q(requeue_at__lte=now))
            .order_by("next_attempt_at")
            .only("pk", "channel", "next_attempt_at", "requeue_at", "requeues")[:SWEEP_BATCH]
        )
        planned = []
        for row in rows:
            at = max(row.next_attempt_at, now)
            if row.requeue_at is not None:  # the task enqueued before never claimed it: lost
                row.requeues += 1
            row.requeue_at = at + _lost_after(row.requeues)
            countdown = (at - now).total_seconds()
            planned.append((row.pk, row.channel, countdown + _COUNTDOWN_MARGIN if countdown > 0 else 0))
        AlertDelivery.objects.bulk_update(rows, ["requeue_at", "requeues"])
    for delivery_id, channel, countdown in planned:
        try:
            delivery_enqueue(delivery_id, channel, countdown=countdown)
        except Exception:  # the broker is down: the next sweep after requeue_at tries again
            logger.exception("budgets: could not enqueue delivery %s", delivery_id)
    return len(planned)
