"""Stripe's webhook events (POST /stripe/webhook/, billing.webhooks verifies them): each stored
once by its id, then handled. `payment_intent.succeeded` / `payment_intent.payment_failed` record
the attempt's outcome through the same function as the charge path (billing.payment_outcomes)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .credit_purchases import purchase_of_intent, purchase_settle
from .models import CreditPurchase, PaymentAttempt, Statement, StripeWebhookEvent
from .payment_outcomes import Outcome, outcome_of_intent, settle

logger = logging.getLogger(__name__)

# Event type → whether it reports a success.
PAYMENT_INTENT_EVENTS = {"payment_intent.succeeded": True, "payment_intent.payment_failed": False}


def webhook_event_receive(event: dict[str, Any], *, now: datetime | None = None) -> tuple[StripeWebhookEvent, bool]:
    """Store a verified Stripe event once by its id, then handle it. Returns (row, handled now).

    A repeat delivery of a processed or ignored event changes nothing. One that failed (or was
    interrupted) is handled again: Stripe redelivers until it gets a 2xx.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            row = StripeWebhookEvent.objects.create(
                event_id=event["id"], type=str(event.get("type", ""))[:100], payload=event
            )
    except IntegrityError:
        row = StripeWebhookEvent.objects.get(event_id=event["id"])
    with transaction.atomic():
        row = StripeWebhookEvent.objects.select_for_update().get(pk=row.pk)
        if row.status in (StripeWebhookEvent.Status.PROCESSED, StripeWebhookEvent.Status.IGNORED):
            return row, False
        row.status, row.error = StripeWebhookEvent.Status.IGNORED, ""
        if row.type in PAYMENT_INTENT_EVENTS:
            try:
                with transaction.atomic():
                    matched = _payment_intent_event_apply(
                        event["data"]["object"], succeeded=PAYMENT_INTENT_EVENTS[row.type], now=now
                    )
            except Exception as exc:
                logger.exception("Stripe event %s (%s) failed", row.event_id, row.type)
                row.status, row.error = StripeWebhookEvent.Status.FAILED, f"{type(exc).__name__}: {exc}"
            else:
                if matched:
                    row.status = StripeWebhookEvent.Status.PROCESSED
                else:
                    row.error = "No payment attempt of ours has this PaymentIntent."
        row.processed_at = now
        row.save(update_fields=["status", "error", "processed_at"])
    return row, True


def _payment_intent_event_apply(intent: dict[str, Any], *, succeeded: bool, now: datetime) -> bool:
    """Record what a payment_intent.* event says about our attempt. False: not one of ours."""
    intent_id = intent["id"]
    purchase = purchase_of_intent(intent)
    if purchase is not None:  # credits bought (billing.credit_purchases), not a statement
        purchase = CreditPurchase.objects.select_for_update().get(pk=purchase.pk)
        outcome = outcome_of_intent(intent)
        if succeeded:
            outcome = Outcome(CreditPurchase.Status.SUCCEEDED, intent_id)
        elif outcome.status != CreditPurchase.Status.FAILED:
            outcome = Outcome(CreditPurchase.Status.FAILED, intent_id, outcome.error or "Payment failed.", code=PaymentAttempt.FailureCode.DECLINED)
        purchase_settle(purchase, outcome, now=now)
        return True
    attempt = PaymentAttempt.objects.filter(payment_intent_id=intent_id).first()
    if attempt is None:
        metadata = intent.get("metadata") or {}
        try:
            statement_id, number = int(metadata["statement_id"]), int(metadata["attempt"])
        except (KeyError, TypeError, ValueError):
            return False
        attempt = PaymentAttempt.objects.filter(statement_id=statement_id, number=number).first()
        if attempt is None or attempt.payment_intent_id not in (None, "", intent_id):
            return False
    statement = Statement.objects.select_for_update().get(pk=attempt.statement_id)
    attempt.refresh_from_db()
    outcome = outcome_of_intent(intent)
    if succeeded:
        outcome = Outcome(PaymentAttempt.Status.SUCCEEDED, intent_id)
    elif outcome.status != PaymentAttempt.Status.FAILED:
        outcome = Outcome(
            PaymentAttempt.Status.FAILED, intent_id, outcome.error or "Payment failed.", code=PaymentAttempt.FailureCode.DECLINED
        )
    settle(statement, attempt, outcome, now=now, actor="stripe webhook")
    return True
