"""Plans and discounts: a workspace's commercial terms."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from pricing.models import PriceBookRate


class Plan(models.Model):
    """Commercial terms. The default plan is pay-as-you-go with the free tier; custom plans add
    any of custom rates, a spot discount, volume tiers, a savings plan and reserved capacity."""

    class VolumeMode(models.TextChoices):
        GRADUATED = "graduated", "Graduated (each slice at its tier's rate)"
        ALL_UNITS = "all_units", "All units (the whole amount at the tier reached)"

    name = models.CharField(max_length=100, unique=True)
    is_default = models.BooleanField(default=False, help_text="Prices workspaces with no assignment")
    free_tier_credit = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0.50"))
    spot_discount_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(0))
    volume_mode = models.CharField(max_length=16, choices=VolumeMode.choices, default=VolumeMode.GRADUATED)
    savings_commitment = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD a month"
    )
    savings_discount_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(0))
    reserved_fee = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD a month"
    )
    prepaid_only = models.BooleanField(
        default=False, help_text="Usage stops (allowance: credits_exhausted) once month-to-date spend reaches the credit balance"
    )
    reserved_included_usage = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD of usage the fee includes"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="plan_one_default"
            )
        ]

    def __str__(self) -> str:
        return self.name


class PlanRate(models.Model):
    """A custom rate: a percentage of list price, or an absolute unit price."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="rates")
    feature = models.CharField(max_length=32, choices=PriceBookRate.FEATURE_CHOICES)
    model = models.CharField(max_length=16, choices=PriceBookRate.MODEL_CHOICES, blank=True, default="")
    percent_of_list = models.DecimalField(max_digits=7, decimal_places=3, null=True, blank=True)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "feature", "model"], name="planrate_unique"),
            models.CheckConstraint(
                condition=models.Q(percent_of_list__isnull=True) ^ models.Q(unit_price__isnull=True),
                name="planrate_percent_xor_price",
            ),
        ]

    def __str__(self) -> str:
        price = f"{self.percent_of_list}% of list" if self.percent_of_list is not None else f"${self.unit_price}"
        return f"{self.feature}{'/' + self.model if self.model else ''}: {price}"



class VolumeTier(models.Model):
    """Discount percent for the month's usage amount up to `up_to` USD (null: no upper bound)."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="volume_tiers")
    up_to = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    discount_percent = models.DecimalField(max_digits=5, decimal_places=2)

    class Meta:
        ordering = [models.F("up_to").asc(nulls_last=True)]

    def __str__(self) -> str:
        return f"up to {self.up_to if self.up_to is not None else '∞'}: {self.discount_percent}% off"



class PlanAssignment(models.Model):
    """A workspace's plan from `effective_from` (UTC) until its next assignment."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="plan_assignments")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="assignments")
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "effective_from"], name="planassignment_unique_start")
        ]

    def __str__(self) -> str:
        return f"{self.workspace} on {self.plan} from {self.effective_from:%Y-%m-%d}"



class Discount(models.Model):
    """A coupon granted to a workspace: percent or fixed; once, N months, or forever."""

    class Kind(models.TextChoices):
        PERCENT = "percent", "Percent off"
        FIXED = "fixed", "Fixed amount off (USD)"

    class Duration(models.TextChoices):
        ONCE = "once", "Once"
        REPEATING = "repeating", "N months"
        FOREVER = "forever", "Forever"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="discounts")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.DecimalField(max_digits=14, decimal_places=6, help_text="percent, or USD")
    duration = models.CharField(max_length=16, choices=Duration.choices, default=Duration.ONCE)
    duration_months = models.PositiveIntegerField(null=True, blank=True)
    features = models.JSONField(default=list, blank=True, help_text="Empty: every feature")
    starts_on = models.DateField(help_text="First billing month it may apply to (its 1st)")
    ends_on = models.DateField(null=True, blank=True, help_text="No month starting after this")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
