"""Stripe: customers, payment attempts and the webhook events received."""

from __future__ import annotations

from django.db import models

from .statements import Statement


class StripeCustomer(models.Model):
    workspace = models.OneToOneField("workspaces.Workspace", on_delete=models.PROTECT, related_name="stripe_customer")
    customer_id = models.CharField(max_length=255, unique=True)
    default_payment_method = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.customer_id



class PaymentAttempt(models.Model):
    """One charge of a statement. Saved STARTED before Stripe is called, then its outcome, so a
    crash between the two is reconciled on re-run (by the PaymentIntent's metadata), never
    charged twice."""

    class Status(models.TextChoices):
        STARTED = "started", "Started"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class FailureCode(models.TextChoices):
        """Why a FAILED attempt failed, for code to act on (its `error` is for people)."""

        NO_CARD = "no_card", "No card on file"
        DECLINED = "declined", "Declined"  # by the bank, or the payment failed at Stripe
        AUTHENTICATION = "authentication_required", "The bank asked for authentication"
        REFUSED = "refused", "Stripe refused the request"  # a detached card, a deleted customer

    class Delivery(models.TextChoices):
        """Where a STARTED attempt's request is (billing.payments decides what to do next)."""

        SENDING = "sending", "Being sent"  # a process is calling Stripe, until `sending_until`
        NOT_SENT = "not_sent", "Never reached Stripe"  # provably: sent again at once, same key
        UNKNOWN = "unknown", "Sent; the answer was lost"  # reconciled with Stripe before anything else
        ANSWERED = "answered", "Stripe answered"

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="payment_attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    delivery = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.SENDING)
    # While SENDING: the process calling Stripe holds the attempt until then (longer than a call
    # can last); past it, that process died and the attempt is reconciled.
    sending_until = models.DateTimeField(null=True, blank=True)
    amount_cents = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=100, unique=True)
    payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    error = models.TextField(blank=True)  # why it failed; for a STARTED attempt, why it is not settled yet
    failure_code = models.CharField(max_length=32, choices=FailureCode.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["statement", "number"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "number"], name="paymentattempt_unique_number")
        ]
        # The every-minute job looks for unsettled attempts: few, among many settled ones.
        indexes = [models.Index(fields=["created_at"], condition=models.Q(status="started"), name="paymentattempt_open")]

    def __str__(self) -> str:
        return f"attempt {self.number} of statement {self.statement_id}: {self.status}"



class StripeWebhookEvent(models.Model):
    """Each Stripe event, stored once by its id before it is handled."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.event_id} ({self.type})"
