"""Prepaid credits: purchases, lots, the append-only ledger, auto-recharge and refunds."""

from __future__ import annotations

from django.db import models

from .payments import PaymentAttempt
from .statements import Statement


class CreditPurchase(models.Model):
    """Credits bought by card: one off-session PaymentIntent, made safe like a statement's
    PaymentAttempt (saved STARTED and `sending` before Stripe is called, an idempotency key from
    its id, reconciled when the answer was lost). Its lot is granted only once it succeeded, once
    (CreditLot.purchase is one-to-one), whether the charge's answer or the webhook says so first."""

    class Status(models.TextChoices):
        STARTED = "started", "Started"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="credit_purchases")
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    delivery = models.CharField(max_length=16, choices=PaymentAttempt.Delivery.choices, default=PaymentAttempt.Delivery.SENDING)
    sending_until = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, unique=True, null=True, blank=True)
    payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    error = models.TextField(blank=True)
    failure_code = models.CharField(max_length=32, choices=PaymentAttempt.FailureCode.choices, blank=True)
    created_by = models.CharField(max_length=200)
    # An auto-recharge: the crossing of the threshold it answers (one purchase per crossing).
    crossing = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "crossing"], condition=models.Q(crossing__isnull=False),
                name="creditpurchase_one_per_crossing",
            ),
            models.CheckConstraint(condition=models.Q(amount_cents__gt=0), name="creditpurchase_positive"),
        ]
        indexes = [models.Index(fields=["created_at"], condition=models.Q(status="started"), name="creditpurchase_open")]

    def __str__(self) -> str:
        return f"credit purchase {self.pk} of workspace {self.workspace_id}: {self.status}"


class CreditLot(models.Model):
    """Credits granted at once (by staff, or bought): consumed oldest-expiring first (no expiry
    last), then oldest. `remaining` is maintained in the transaction that writes each of its
    entries and always equals their sum (the model test checks it)."""

    class Source(models.TextChoices):
        GRANT = "grant", "Granted by staff"
        PURCHASE = "purchase", "Purchased"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="credit_lots")
    source = models.CharField(max_length=16, choices=Source.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD
    remaining = models.DecimalField(max_digits=18, decimal_places=6)  # USD, = the sum of its entries
    expires_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_by = models.CharField(max_length=200)
    purchase = models.OneToOneField(CreditPurchase, on_delete=models.PROTECT, null=True, blank=True, related_name="lot")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "created_at", "pk"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="creditlot_positive"),
            models.CheckConstraint(
                condition=models.Q(remaining__gte=0) & models.Q(remaining__lte=models.F("amount")),
                name="creditlot_remaining_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} {self.amount} ({self.remaining} left)"


class CreditEntry(models.Model):
    """The credit ledger, append-only: a workspace's balance is the sum of its entries."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        PURCHASE = "purchase", "Purchase"
        CONSUMPTION = "consumption", "Applied to a statement"
        EXPIRY = "expiry", "Expired"
        REFUND = "refund", "Refunded"
        REVERSAL = "reversal", "Given back (statement voided)"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="credit_entries")
    lot = models.ForeignKey(CreditLot, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD, signed
    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, null=True, blank=True, related_name="credit_entries")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["workspace", "created_at", "pk"]
        constraints = [
            # A statement consumes from a lot once, and a voided one is given back once.
            models.UniqueConstraint(
                fields=["lot", "statement", "kind"], condition=models.Q(statement__isnull=False),
                name="creditentry_once_per_statement",
            ),
        ]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="creditentry_recent")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+}"


class AutoRecharge(models.Model):
    """When the live balance falls below `threshold`, buy `amount` with the saved card: once per
    crossing (`armed` is cleared when a crossing is charged, set again once the live balance is at
    or above the threshold) and at most `max_per_day` times a UTC day. A declined recharge clears
    `enabled` (with the reason) until a new card is added."""

    workspace = models.OneToOneField("workspaces.Workspace", on_delete=models.CASCADE, related_name="auto_recharge")
    enabled = models.BooleanField(default=False)
    threshold = models.DecimalField(max_digits=18, decimal_places=6)  # USD
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD, what one recharge buys
    max_per_day = models.PositiveIntegerField(default=3)
    armed = models.BooleanField(default=True)
    crossings = models.PositiveIntegerField(default=0)  # crossings charged so far
    disabled_reason = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"auto-recharge of workspace {self.workspace_id}: {'on' if self.enabled else 'off'}"


class CreditRefund(models.Model):
    """Purchased credits paid back to the card (staff, in the admin): the REFUND entry that takes
    them out of the wallet is written and committed first (STARTED), then Stripe is asked with the
    key `credit_refund:{id}`; a refund Stripe refuses gives the credits back (a REVERSAL entry), one
    whose answer was lost is asked again with the same key by the every-minute job."""

    class Status(models.TextChoices):
        STARTED = "started", "Started"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    entry = models.OneToOneField(CreditEntry, on_delete=models.PROTECT, related_name="refund")
    purchase = models.ForeignKey(CreditPurchase, on_delete=models.PROTECT, related_name="refunds")
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    stripe_refund_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"refund {self.pk} of credit purchase {self.purchase_id}: {self.status}"
