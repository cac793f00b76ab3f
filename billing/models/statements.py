"""Statements and their lines, balance adjustments, close runs and the audit trail."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from .plans import Plan


class Statement(models.Model):
    """One workspace's bill for one UTC calendar month. Finalized statements never change."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FINALIZED = "finalized", "Finalized"
        PAID = "paid", "Paid"
        PAYMENT_FAILED = "payment_failed", "Payment failed"
        VOID = "void", "Void"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="statements")
    period = models.DateField(help_text="The 1st of the month (UTC)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+", null=True)
    total = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))  # USD
    amount_due_cents = models.BigIntegerField(default=0)
    carried_forward = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    # What this statement bills (billing.drafts, "Which events a statement bills"): the events
    # that occurred before the period's end and were received by `usage_cutoff`, less those the
    # previous live statement billed, i.e. those that occurred before `prior_period`'s end and were
    # received by `prior_cutoff`. A reissue keeps all three, so it bills the very same events.
    usage_cutoff = models.DateTimeField(null=True)
    prior_period = models.DateField(null=True, blank=True)
    prior_cutoff = models.DateTimeField(null=True, blank=True)
    # The balance this statement took over from the previous one (kept by a reissue).
    carried_in = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    # The tax applied (billing.statement step 9): its name and rate, and the amount (also a line).
    tax_name = models.CharField(max_length=40, blank=True)
    tax_percent = models.DecimalField(max_digits=6, decimal_places=3, default=Decimal(0))
    tax = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    credits_applied = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))  # USD, the credits line
    created_at = models.DateTimeField(auto_now_add=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    reissue_of = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="reissues")
    next_retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period", "workspace"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "period"],
                condition=~models.Q(status="void"),
                name="statement_one_live_per_month",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workspace} {self.period:%Y-%m} ({self.status})"


class StatementLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        LATE_USAGE = "late_usage", "Late usage"
        VOLUME_DISCOUNT = "volume_discount", "Volume discount"
        SAVINGS_DISCOUNT = "savings_discount", "Savings-plan discount"
        COUPON = "coupon", "Coupon"
        FREE_TIER = "free_tier", "Free tier"
        COMMITMENT_SHORTFALL = "commitment_shortfall", "Commitment shortfall"
        FIXED_FEE = "fixed_fee", "Fixed fee"
        CREDITS = "credits", "Prepaid credits"
        TAX = "tax", "Tax"
        CARRIED_BALANCE = "carried_balance", "Carried balance"
        ADJUSTMENT = "adjustment", "Adjustment"

    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    description = models.CharField(max_length=300)
    quantity = models.BigIntegerField(default=1)
    unit_price = models.DecimalField(max_digits=18, decimal_places=6)
    amount = models.DecimalField(max_digits=18, decimal_places=6)

    class Meta:
        ordering = ["statement", "position"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "position"], name="statementline_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"



class BalanceAdjustment(models.Model):
    """Money owed (positive) or credited (negative) on the workspace's next statement.

    Made when staff reissue a statement whose carried balance a later statement had already
    billed: the later statement is final, so the difference is settled on the next one, as its
    own line, once. `applied_to` is the statement that bills it (a reissue of that statement takes
    it over); a credit larger than that statement's total leaves a new adjustment for the rest.
    """

    class Kind(models.TextChoices):
        CORRECTION = "correction", "Correction of a reissued statement"
        REMAINDER = "remainder", "Credit a statement could not take"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="balance_adjustments")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=6)
    description = models.CharField(max_length=300)
    source = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="adjustments_made")
    applied_to = models.ForeignKey(
        Statement, on_delete=models.PROTECT, null=True, blank=True, related_name="adjustments_applied"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.workspace} {self.amount:+} ({self.description})"


class CloseRun(models.Model):
    """One scheduled (or staff-started) close of a month: shown on the staff page, and staff are
    e-mailed when one fails for good, so a month never stays open unnoticed."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed"

    period = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    months_closed = models.JSONField(default=list, blank=True)
    statements_created = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]

    def __str__(self) -> str:
        return f"close {self.period:%Y-%m}: {self.status}"


class StatementAudit(models.Model):
    """Who did what to a statement, and why (void and reissue, re-runs, payment outcomes)."""

    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="audit")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["statement", "at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor}: {self.action}"
