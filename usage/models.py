"""The usage ledger (append-only) and its daily rollups."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q

from pricing.models import PriceBook
from workspaces.models import ApiKey, Workspace

from .validation import MAX_FUTURE


class UsageEvent(models.Model):
    """One billable action, priced on arrival and never changed afterwards.

    `event_id` is the sender's idempotency id, unique per workspace: its `EventReceipt` is what the
    database keeps unique (issue 13), so that the events themselves can live in monthly partitions.
    `content_hash` fingerprints the billable content, so a repeat with different content is told
    apart (a conflict) from a plain retry (a duplicate).

    On PostgreSQL the table is partitioned by month of `received_at` (usage.partitions, migration
    0006): ingestion writes to the current month's partition only, a month's partition holds what
    that month's close billed and nothing arrives in it afterwards, so it can be archived whole.
    `occurred_at` is never more than MAX_FUTURE after `received_at` (validation; a CHECK on
    PostgreSQL), which lets a read by occurred_at skip every earlier month's partition
    (`received_since`).
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
        indexes = [
            models.Index(fields=["workspace", "occurred_at"], name="usageevent_ws_occurred"),
            # Late usage: what arrived after the previous statement's cutoff (billing.drafts).
            models.Index(fields=["workspace", "received_at"], name="usageevent_ws_received"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.feature}, {self.amount})"


def received_since(occurred_from: datetime) -> Q:
    """The bound on `received_at` that an event which occurred at or after `occurred_from` must
    meet: added to a read by occurred_at, it lets PostgreSQL skip the partitions of earlier months."""
    return Q(received_at__gte=occurred_from - MAX_FUTURE)


class EventReceipt(models.Model):
    """The first arrival of an `event_id` in a workspace: the key that makes ingestion exactly-once
    across all the months' partitions of the events (one unique index cannot span partitions), and
    what a retry is answered from (duplicate, or conflict when its content differs).

    Kept for EVENT_RECEIPT_DAYS (at least 400) after arrival, also when the month's events are
    archived; `prune_event_receipts` deletes older ones (on PostgreSQL a BRIN index on received_at,
    made by migration 0006, finds them for the cost of a few pages, not a second B-tree per event)."""

    pk = models.CompositePrimaryKey("workspace_id", "event_id")
    workspace = models.ForeignKey(
        Workspace, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    event_id = models.CharField(max_length=128)
    content_hash = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=18, decimal_places=6)
    received_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.workspace_id}:{self.event_id}"


class ArchivedMonth(models.Model):
    """A month of events (by arrival) exported by `manage.py archive_usage` and removed from the
    database: its rollups, statements and receipts stay, its events are in `path`."""

    month = models.DateField(unique=True)  # first day, UTC
    path = models.CharField(max_length=500)
    rows = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    archived_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} ({self.rows} events, {self.path})"


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
