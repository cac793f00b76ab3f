"""Input checks and the documented output shapes of the budgets API.

Input: the rules of a budget are budgets.rules' (the dashboard's form applies the same); these
serializers parse JSON and answer per field. Output: each answer is serialized from the objects
the services and selectors return (a BudgetStatus, an Alert, a Forecast, an Allowance), so the
OpenAPI schema drf-spectacular derives from these classes is what the API answers.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from core import webhooks
from core.money import CURRENCY
from usage.selectors import DAYS_BOUNDS_MESSAGE, EARLIEST_DAY, LATEST_DAY
from usage.serializers import MAX_RANGE_DAYS

from . import rules
from .anomaly import DEFAULT_THRESHOLD as DEFAULT_ANOMALY_THRESHOLD
from .models import DEFAULT_THRESHOLDS, Alert, AlertDelivery
from .selectors import FORECAST_METHOD

MONEY = {"max_digits": rules.AMOUNT_DIGITS, "decimal_places": rules.AMOUNT_PLACES}
# Ids are 64-bit (BigAutoField): a larger number cannot name a row, and SQLite cannot even compare
# with it (OverflowError), so it is refused as input (400) before any query.
MAX_ID = 2**63 - 1


class StrictSerializer(serializers.Serializer):
    """Unknown fields are errors, not silently dropped, so that a typo ("threshold") is caught."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return value


class WebhookInputSerializer(StrictSerializer):
    id = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="PATCH: an endpoint of the budget to keep (and its secret)"
    )
    url = serializers.CharField(
        max_length=webhooks.MAX_URL_LENGTH,
        help_text="https://… (http:// too); its host must resolve to public (global unicast) addresses only",
    )

    def validate_url(self, value: str) -> str:
        try:
            return rules.webhook_url_check(value)
        except rules.BudgetInvalid as exc:
            raise serializers.ValidationError(str(exc)) from None


class BudgetInputSerializer(StrictSerializer):
    """POST /budgets (every field but amount has a default) and PATCH (partial: only those sent)."""

    amount = serializers.DecimalField(
        **MONEY, min_value=rules.AMOUNT_MIN, max_value=rules.AMOUNT_MAX, help_text="USD a month"
    )
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=rules.THRESHOLD_MIN, max_value=rules.THRESHOLD_MAX),
        max_length=rules.MAX_THRESHOLDS,
        default=lambda: list(DEFAULT_THRESHOLDS),
        help_text="Percents of the amount, each alerted once a month (default 50, 80, 100)",
    )
    forecast_alerts = serializers.BooleanField(default=True, help_text="Also alert when the month-end forecast reaches a threshold")
    hard_limit = serializers.BooleanField(default=False, help_text="GET /allowance answers allowed: false once spend reaches the amount")
    api_key = serializers.CharField(
        allow_null=True, default=None, help_text="Narrow the budget to one API key (its visible prefix, mbk_…); null: the workspace"
    )
    email = serializers.BooleanField(default=True, help_text="E-mail the workspace's owners and admins")
    webhooks = WebhookInputSerializer(many=True, default=list, max_length=rules.MAX_WEBHOOKS)
    anomaly_threshold = serializers.DecimalField(
        max_digits=4, decimal_places=1, min_value=rules.ANOMALY_THRESHOLD_MIN, max_value=rules.ANOMALY_THRESHOLD_MAX,
        allow_null=True, default=DEFAULT_ANOMALY_THRESHOLD,
        help_text="Spend anomaly alerts: the score (spreads above the recent usual) from which a day is alerted, "
        "2 to 20 (default 4.0); null: no anomaly alerts for this budget's scope",
    )  # fmt: skip

    def validate_thresholds(self, value: list[int]) -> list[int]:
        try:
            return rules.thresholds_check(value)
        except rules.BudgetInvalid as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_api_key(self, value: str | None):
        if value is None:
            return None
        try:
            return rules.budget_api_key(self.context["workspace"], value)
        except rules.BudgetInvalid as exc:
            raise serializers.ValidationError(str(exc)) from None


# --- Answers ---------------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "pattern": r"^\d{4}-\d{2}$", "example": "2026-11"})
class MonthField(serializers.Field):
    """A month (a date, the 1st) as "YYYY-MM", and so documented: not a date."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value) -> str:
        return f"{value:%Y-%m}"


class IssuedSecretField(serializers.CharField):
    """An endpoint's signing secret, only in the answer that created it: the serializer's context
    `issued` maps those endpoints' ids to their secrets; any other endpoint's answer leaves it out."""

    def get_attribute(self, endpoint):
        issued = self.context.get("issued", {})
        if endpoint.pk not in issued:
            raise SkipField()
        return issued[endpoint.pk]


# Of a WebhookEndpoint.
class WebhookSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    secret = IssuedSecretField(
        required=False, help_text="Only in the answer that created the endpoint: keep it to verify signatures"
    )


# Of a budgets.selectors.BudgetStatus: the budget (its key and webhooks fetched) and its scope's
# spend and forecast this month. Context `issued`: {endpoint id: secret} of the endpoints this
# request created (services.IssuedEndpoint), shown in this answer only. (Comments, not docstrings:
# a serializer's docstring becomes its description in the public schema.)
class BudgetSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="budget.pk")
    amount = serializers.DecimalField(**MONEY, source="budget.amount", help_text="USD a month")
    thresholds = serializers.ListField(child=serializers.IntegerField(), source="budget.thresholds")
    forecast_alerts = serializers.BooleanField(source="budget.forecast_alerts")
    hard_limit = serializers.BooleanField(source="budget.hard_limit")
    api_key = serializers.CharField(
        source="budget.api_key.display_prefix", allow_null=True, help_text="mbk_… prefix, or null for the whole workspace"
    )
    api_key_name = serializers.CharField(source="budget.api_key.name", allow_null=True)
    email = serializers.BooleanField(source="budget.email")
    webhooks = WebhookSerializer(source="budget.webhooks.all", many=True)
    anomaly_threshold = serializers.DecimalField(
        max_digits=4, decimal_places=1, source="budget.anomaly_threshold", allow_null=True,
        help_text="Spend anomaly alerts from this score; null: off",
    )
    period = MonthField(source="forecast.period", help_text="The current UTC month, YYYY-MM")
    spend = serializers.DecimalField(**MONEY, source="forecast.spend", help_text="USD, month to date, of the budget's scope")
    forecast = serializers.DecimalField(**MONEY, source="forecast.forecast", help_text="USD, projected month end")
    created_at = serializers.DateTimeField(source="budget.created_at")
    updated_at = serializers.DateTimeField(source="budget.updated_at")


class DeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    channel = serializers.ChoiceField(choices=AlertDelivery.Channel.choices)
    target = serializers.CharField(help_text="E-mail address or webhook URL")
    status = serializers.ChoiceField(choices=AlertDelivery.Status.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)


# Of an Alert, its deliveries fetched.
class AlertSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Alert.Kind.choices)
    budget = serializers.IntegerField(allow_null=True, source="budget_id")
    period = MonthField(help_text="The UTC month of the alert, YYYY-MM")
    threshold = serializers.IntegerField(allow_null=True, help_text="Percent of budget_amount")
    budget_amount = serializers.DecimalField(**MONEY, allow_null=True)
    spend = serializers.DecimalField(**MONEY)
    forecast = serializers.DecimalField(**MONEY, allow_null=True)
    created_at = serializers.DateTimeField()
    deliveries = DeliverySerializer(many=True)


class AlertQuerySerializer(StrictSerializer):
    budget = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="Only this budget's alerts")
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)
    workspace = serializers.SlugField(required=False, max_length=64, help_text="Session callers: the workspace slug")


# Of {"alert": the test alert}.
class TestAlertSerializer(serializers.Serializer):
    alert = AlertSerializer()


# Of a budgets.selectors.Forecast; context `workspace`: the workspace it is of.
class ForecastSerializer(serializers.Serializer):
    workspace = serializers.SerializerMethodField()
    period = MonthField(help_text="YYYY-MM, UTC")
    spend = serializers.DecimalField(**MONEY, help_text="USD, month to date")
    forecast = serializers.DecimalField(**MONEY, help_text="USD, projected month end (never below spend)")
    daily_rate = serializers.DecimalField(**MONEY, help_text="USD a day, the run rate used")
    basis_days = serializers.DecimalField(max_digits=8, decimal_places=4, help_text="Days the run rate averages")
    remaining_days = serializers.DecimalField(max_digits=8, decimal_places=4)
    method = serializers.SerializerMethodField()
    currency = serializers.SerializerMethodField()

    def get_workspace(self, forecast) -> str:
        return self.context["workspace"].slug

    def get_method(self, forecast) -> str:
        return FORECAST_METHOD

    def get_currency(self, forecast) -> str:
        return CURRENCY


# Of a budgets.selectors.Allowance.
class AllowanceSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    spend = serializers.DecimalField(**MONEY, help_text="USD, month to date")
    budget = serializers.DecimalField(**MONEY, allow_null=True, help_text="USD, the binding hard-limit budget")
    remaining = serializers.DecimalField(**MONEY, allow_null=True)
    reason = serializers.CharField(allow_null=True)


# --- Spend anomalies ---------------------------------------------------------------------------------


class AnomalyQuerySerializer(StrictSerializer):
    start = serializers.DateField(required=False, help_text="First UTC day (default: 30 days before end)")
    end = serializers.DateField(required=False, help_text="Last UTC day, inclusive (default: today)")
    workspace = serializers.SlugField(required=False, max_length=64, help_text="Session callers: the workspace slug")

    def validate(self, attrs):
        attrs.setdefault("end", timezone.now().date())
        if EARLIEST_DAY <= attrs["end"] <= LATEST_DAY:
            attrs.setdefault("start", max(attrs["end"] - timedelta(days=30), EARLIEST_DAY))
        out_of_bounds = {
            name: [DAYS_BOUNDS_MESSAGE] for name in ("start", "end") if name in attrs and not EARLIEST_DAY <= attrs[name] <= LATEST_DAY
        }
        if out_of_bounds:
            raise serializers.ValidationError(out_of_bounds)
        if attrs["end"] < attrs["start"]:
            raise serializers.ValidationError({"end": ["Must not be before start."]})
        if attrs["end"] - attrs["start"] > timedelta(days=MAX_RANGE_DAYS):
            raise serializers.ValidationError({"end": [f"The range is at most {MAX_RANGE_DAYS} days."]})
        return attrs


# Of a SpendAnomaly.
class AnomalySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    day = serializers.DateField(help_text="UTC")
    api_key = serializers.CharField(
        source="api_key.display_prefix", allow_null=True, help_text="mbk_… prefix, or null for the whole workspace"
    )
    api_key_name = serializers.CharField(source="api_key.name", allow_null=True)
    amount = serializers.DecimalField(**MONEY, help_text="USD spent that day (so far, when judged during the day)")
    baseline = serializers.DecimalField(**MONEY, help_text="USD, the usual: median of the recent history (same weekday with 4+ weeks), pro-rated when partial")
    mad = serializers.DecimalField(**MONEY, help_text="USD, the spread: median absolute deviation (with its floor)")
    score = serializers.DecimalField(max_digits=12, decimal_places=2, help_text="(amount - baseline) / (1.4826 × mad)")
    threshold = serializers.DecimalField(max_digits=4, decimal_places=1)
    fraction_of_day = serializers.DecimalField(max_digits=5, decimal_places=4, source="fraction", help_text="1: the whole day")
    seasonal = serializers.BooleanField(help_text="Judged against the same weekday")
    alert = serializers.IntegerField(source="alert_id", allow_null=True, help_text="The alert that told it (GET /alerts)")
    created_at = serializers.DateTimeField()
