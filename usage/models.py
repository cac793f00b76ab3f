"""The usage ledger (append-only) and its daily rollups."""

from __future__ import annotations

from django.db import models

from pricing.models import PriceBook
from workspaces.models import ApiKey, Workspace


class UsageEvent(models.Model):
    """One billable action, priced on arrival and never changed afterwards.

    `event_id` is the sender's idempotency id: unique per workspace, enforced by the database so
    that concurrent retries store it once. `content_hash` fingerprints the billable content, so a
    repeat with different content is told apart (a conflict) from a plain retry (a duplicate).
    """

    # No index of their own on workspace and api_key (issue 12): every read of events names the
    # workspace first, which the unique (workspace, event_id) and the two (workspace, time) indexes
    # serve, and keys are revoked, never deleted. Each index costs every insert; the price book's
    # stays, for the admin's "has priced events" and its PROTECT check.
    # No foreign-key constraints in the database either (issue 12; migration 0005): PostgreSQL
    # checked all three for every event at commit (18 ms of its 40 ms for 1,000 events), where
    # ingestion's one statement now takes the same locks once (usage.services), and a trigger on
    # each referenced table refuses a delete while events reference the row, as the keys did.
    workspace = models.ForeignKey(
        Workspace, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    event_id = models.CharField(max_length=128)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    feature = models.CharField(max_length=32)
    model = models.CharField(max_length=16, blank=True, default="")
    steps = models.PositiveIntegerField(null=True)
    width = models.PositiveIntegerField(null=True)
    height = models.PositiveIntegerField(null=True)
    composition_control = models.BooleanField(default=False)
    spot = models.BooleanField(default=False)
    quantity = models.PositiveIntegerField(default=1)
    metadata = models.JSONField(default=dict, blank=True)
    unit_price = models.DecimalField(max_digits=14, decimal_places=6)  # USD per unit, list price
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD, unit_price × quantity
    price_book = models.ForeignKey(PriceBook, on_delete=models.PROTECT, related_name="+", db_constraint=False)
    content_hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "event_id"], name="usageevent_unique_event_id")
        ]
        indexes = [
            models.Index(fields=["workspace", "occurred_at"], name="usageevent_ws_occurred"),
            # Late usage: what arrived after the previous statement's cutoff (billing.drafts).
            models.Index(fields=["workspace", "received_at"], name="usageevent_ws_received"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.feature}, {self.amount})"


# The dimensions of a rollup row, in the order of its unique index. Non-generation features
# store "" / 0 rather than NULL so that the unique index (and ON CONFLICT) sees one row.
ROLLUP_KEY = (
    "workspace_id",
    "day",
    "api_key_id",
    "feature",
    "model",
    "steps",
    "width",
    "height",
    "composition_control",
    "spot",
    "unit_price_micros",
)


class DailyRollup(models.Model):
    """Usage summed per UTC day and every billable dimension, kept by ingestion in the same
    transaction as the events. Money is integer micro-dollars so that sums are exact on every
    database (SQLite would add decimals as floats)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="+")
    day = models.DateField()  # UTC
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+")
    feature = models.CharField(max_length=32)
    model = models.CharField(max_length=16, default="")
    steps = models.PositiveIntegerField(default=0)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    composition_control = models.BooleanField(default=False)
    spot = models.BooleanField(default=False)
    unit_price_micros = models.BigIntegerField()  # USD × 10⁶ per unit
    quantity = models.BigIntegerField(default=0)
    amount_micros = models.BigIntegerField(default=0)  # USD × 10⁶
    events = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Also the index every read uses: it starts with (workspace, day).
            models.UniqueConstraint(
                fields=[key.removesuffix("_id") for key in ROLLUP_KEY], name="dailyrollup_unique_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.workspace_id} {self.day} {self.feature} ×{self.quantity}"
