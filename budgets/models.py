"""Budgets, the alerts they raise, and the delivery of each alert on each channel."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone

from workspaces.models import ApiKey, Workspace

DEFAULT_THRESHOLDS = (50, 80, 100)


def default_thresholds() -> list[int]:
    return list(DEFAULT_THRESHOLDS)


class Budget(models.Model):
    """A monthly spending budget of a workspace, or of one of its API keys (`api_key` set).

    Spend is usage at list price as the rollups sum it (before plan discounts and the free tier),
    over the UTC calendar month. A workspace may hold several budgets (say a soft one for alerts
    and a hard limit above it).
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="budgets")
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets")
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD a month
    thresholds = models.JSONField(default=default_thresholds)  # percents of amount, ascending integers
    forecast_alerts = models.BooleanField(default=True)
    hard_limit = models.BooleanField(default=False, help_text="The allowance endpoint blocks once spend reaches it")
    email = models.BooleanField(default=True, help_text="E-mail the workspace's owners and admins")
    # Spend anomaly alerts (budgets.anomaly): the score from which a day is anomalous; null = off.
    anomaly_threshold = models.DecimalField(
        max_digits=4, decimal_places=1, null=True, blank=True, default=Decimal("4.0"),
        help_text="Alert when a day's spend scores this far above its recent history (2-20); empty: no anomaly alerts",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "pk"]

    def __str__(self) -> str:
        scope = f"key {self.api_key_id}" if self.api_key_id else "workspace"
        return f"{self.workspace_id}: {self.amount} USD/month ({scope})"


class WebhookEndpoint(models.Model):
    """Where a budget's alerts are POSTed. The secret signs them (HMAC-SHA256), so it is kept as
    is (signing needs it); the API shows it once, in the answer that created the endpoint."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=2000)
    secret = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url


class Alert(models.Model):
    """A threshold crossed (or a notice), recorded once; its deliveries say who was told and how.

    At most one alert per (budget, month, threshold, actual | forecast), and one free-allowance
    notice per workspace and month: unique indexes, so that evaluators racing each other record
    it once and only the one that inserted it sends it.
    """

    class Kind(models.TextChoices):
        ACTUAL = "actual", "Spend reached a threshold"
        FORECAST = "forecast", "Forecast reaches a threshold"
        FREE_ALLOWANCE = "free_allowance", "Free allowance used up"
        TEST = "test", "Test alert"
        ANOMALY = "anomaly", "Spend anomaly"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    # Kept when the budget is deleted: the history stays, with the amount it had.
    budget = models.ForeignKey(Budget, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    period = models.DateField()  # the 1st of the UTC month
    kind = models.CharField(max_length=16, choices=Kind.choices)
    threshold = models.PositiveIntegerField(null=True, blank=True)  # percent of budget_amount
    budget_amount = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)  # USD
    spend = models.DecimalField(max_digits=18, decimal_places=6)  # USD, month to date when recorded
    forecast = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)  # USD, month end
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period", "threshold", "kind"],
                condition=models.Q(kind__in=["actual", "forecast"]),
                name="alert_once_per_threshold",
            ),
            models.UniqueConstraint(
                fields=["workspace", "period"],
                condition=models.Q(kind="free_allowance"),
                name="alert_free_allowance_once",
            ),
        ]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="alert_ws_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.threshold or ''} {self.period:%Y-%m} (budget {self.budget_id})"


class AlertDelivery(models.Model):
    """One alert to one recipient: an e-mail address or a webhook endpoint. Attempts are claimed
    (`claimed_until`) before they are made, so two tasks holding the same delivery never both send.

    The schedule lives here, not in a worker: `next_attempt_at` is when the next attempt is due
    (set when an attempt starts, for the case it never reports back, and again when it ends), and
    `requeue_at` says a task is coming for it. The sweep (budgets.delivery.deliveries_enqueue_due)
    enqueues what is due and has no task coming, or whose task is overdue (lost)."""

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed (gave up)"
        CANCELLED = "cancelled", "Cancelled (endpoint removed)"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    target = models.CharField(max_length=2000)  # the e-mail address or the webhook URL
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # due from then; null once settled
    claimed_until = models.DateTimeField(null=True, blank=True)  # an attempt in progress holds it
    # A task is enqueued for it: still unclaimed by then, that task was lost (a worker died holding
    # it) and the sweep enqueues another. Null when no task is coming; cleared by each attempt.
    requeue_at = models.DateTimeField(null=True, blank=True)
    requeues = models.PositiveIntegerField(default=0)  # tasks lost in a row: each doubles the wait
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pk"]
        verbose_name_plural = "alert deliveries"
        # The sweep's query, every few seconds: only deliveries still to make, a small index.
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="delivery_open_due", condition=models.Q(status__in=["pending", "retrying"])
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target}: {self.status}"


class DeliveryAttempt(models.Model):
    """Every attempt, saved STARTED before the e-mail or POST goes out and with its outcome after."""

    class Outcome(models.TextChoices):
        STARTED = "started", "Started"
        OK = "ok", "Delivered"
        HTTP_ERROR = "http_error", "Non-2xx answer"
        TIMEOUT = "timeout", "Timed out"
        ERROR = "error", "Error"
        REFUSED = "refused", "Refused (address not allowed)"
        ABANDONED = "abandoned", "Abandoned (worker stopped mid-attempt)"

    delivery = models.ForeignKey(AlertDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.STARTED)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.outcome}"


class SpendAnomaly(models.Model):
    """A day on which a workspace's (api_key null) or one API key's spend was far above its own
    recent history (budgets.anomaly), with the numbers that said so. At most one per (workspace,
    key, day): the hourly check of today and the daily check of yesterday insert against a unique
    index, and only the one that inserted it sends its alert (`alert`, kind anomaly)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    day = models.DateField()  # UTC
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD, spent that day (so far, if partial)
    baseline = models.DecimalField(max_digits=18, decimal_places=6)  # USD, median, pro-rated if partial
    mad = models.DecimalField(max_digits=18, decimal_places=6)  # USD, the spread used (floored)
    score = models.DecimalField(max_digits=12, decimal_places=2)
    threshold = models.DecimalField(max_digits=4, decimal_places=1)
    fraction = models.DecimalField(max_digits=5, decimal_places=4, default=Decimal(1))  # of the day judged
    seasonal = models.BooleanField(default=False)  # judged against the same weekday
    alert = models.OneToOneField(Alert, on_delete=models.SET_NULL, null=True, blank=True, related_name="anomaly")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-day", "pk"]
        verbose_name_plural = "spend anomalies"
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "day"], condition=models.Q(api_key__isnull=True), name="anomaly_once_per_workspace_day"
            ),
            models.UniqueConstraint(
                fields=["workspace", "api_key", "day"], condition=models.Q(api_key__isnull=False),
                name="anomaly_once_per_key_day",
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        scope = f"key {self.api_key_id}" if self.api_key_id else "workspace"
        return f"{self.workspace_id} ({scope}) {self.day}: score {self.score}"
