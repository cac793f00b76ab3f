"""Input checks and the documented output shapes of the budgets API."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from workspaces.models import ApiKey

from . import webhooks
from .models import DEFAULT_THRESHOLDS, Alert, AlertDelivery

MAX_THRESHOLDS = 10
MAX_WEBHOOKS = 10
MONEY = {"max_digits": 18, "decimal_places": 6}
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
            webhooks.url_target(
                value,
                allow_private=getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False),
                timeout=float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 5)),
            )
        except webhooks.UrlRefused as exc:
            raise serializers.ValidationError(str(exc)) from None
        except TimeoutError:
            raise serializers.ValidationError("The host name did not resolve in time; try again.") from None
        return value.strip()


class BudgetInputSerializer(StrictSerializer):
    """POST /budgets (every field but amount has a default) and PATCH (partial: only those sent)."""

    amount = serializers.DecimalField(
        **MONEY, min_value=Decimal("0.01"), max_value=Decimal("1000000000"), help_text="USD a month"
    )
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000),
        max_length=MAX_THRESHOLDS,
        default=lambda: list(DEFAULT_THRESHOLDS),
        help_text="Percents of the amount, each alerted once a month (default 50, 80, 100)",
    )
    forecast_alerts = serializers.BooleanField(default=True, help_text="Also alert when the month-end forecast reaches a threshold")
    hard_limit = serializers.BooleanField(default=False, help_text="GET /allowance answers allowed: false once spend reaches the amount")
    api_key = serializers.CharField(
        allow_null=True, default=None, help_text="Narrow the budget to one API key (its visible prefix, mbk_…); null: the workspace"
    )
    email = serializers.BooleanField(default=True, help_text="E-mail the workspace's owners and admins")
    webhooks = WebhookInputSerializer(many=True, default=list, max_length=MAX_WEBHOOKS)

    def validate_thresholds(self, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Each threshold once.")
        return sorted(value)

    def validate_api_key(self, value: str | None) -> ApiKey | None:
        if value is None:
            return None
        prefix = value.strip().removeprefix("mbk_")
        api_key = ApiKey.objects.filter(workspace=self.context["workspace"], prefix=prefix).first()
        if api_key is None:
            raise serializers.ValidationError(f"No API key {value!r} in this workspace (give its mbk_… prefix).")
        if not api_key.is_active:
            raise serializers.ValidationError("This API key is revoked.")
        return api_key


class WebhookSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    secret = serializers.CharField(
        required=False, help_text="Only in the answer that created the endpoint: keep it to verify signatures"
    )


class BudgetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    amount = serializers.DecimalField(**MONEY, help_text="USD a month")
    thresholds = serializers.ListField(child=serializers.IntegerField())
    forecast_alerts = serializers.BooleanField()
    hard_limit = serializers.BooleanField()
    api_key = serializers.CharField(allow_null=True, help_text="mbk_… prefix, or null for the whole workspace")
    api_key_name = serializers.CharField(allow_null=True)
    email = serializers.BooleanField()
    webhooks = WebhookSerializer(many=True)
    period = serializers.CharField(help_text="The current UTC month, YYYY-MM")
    spend = serializers.DecimalField(**MONEY, help_text="USD, month to date, of the budget's scope")
    forecast = serializers.DecimalField(**MONEY, help_text="USD, projected month end")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class DeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    channel = serializers.ChoiceField(choices=AlertDelivery.Channel.choices)
    target = serializers.CharField(help_text="E-mail address or webhook URL")
    status = serializers.ChoiceField(choices=AlertDelivery.Status.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)


@extend_schema_field({"type": "string", "pattern": r"^\d{4}-\d{2}$", "example": "2026-11"})
class MonthField(serializers.Field):
    """A month (a date, the 1st) as "YYYY-MM", and so documented: not a date."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value) -> str:
        return f"{value:%Y-%m}"


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


class TestAlertSerializer(serializers.Serializer):
    alert = AlertSerializer()


class ForecastSerializer(serializers.Serializer):
    workspace = serializers.CharField()
    period = serializers.CharField(help_text="YYYY-MM, UTC")
    spend = serializers.DecimalField(**MONEY, help_text="USD, month to date")
    forecast = serializers.DecimalField(**MONEY, help_text="USD, projected month end (never below spend)")
    daily_rate = serializers.DecimalField(**MONEY, help_text="USD a day, the run rate used")
    basis_days = serializers.DecimalField(max_digits=8, decimal_places=4, help_text="Days the run rate averages")
    remaining_days = serializers.DecimalField(max_digits=8, decimal_places=4)
    method = serializers.CharField()
    currency = serializers.CharField()


class AllowanceSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    spend = serializers.DecimalField(**MONEY, help_text="USD, month to date")
    budget = serializers.DecimalField(**MONEY, allow_null=True, help_text="USD, the binding hard-limit budget")
    remaining = serializers.DecimalField(**MONEY, allow_null=True)
    reason = serializers.CharField(allow_null=True)
