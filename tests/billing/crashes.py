"""Crash injection for the charge path, in one place: what a charging process has done at the
moment it dies. There is no public way to stop a charge half-way, so these call the two halves of
billing.payments' charge (before and during the Stripe call) directly."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from billing import payment_intents, payments
from billing.models import PaymentAttempt, Statement


def begin(statement: Statement, now: datetime) -> PaymentAttempt:
    """What a charge does before it calls Stripe: the attempt is saved STARTED, held by this
    process (`sending` until its lease ends), and committed."""
    attempt, actor = payments._charge_begin(statement.pk, now=now, retry_now=False, reach=payments._Reachability())
    assert actor == "stripe" and (attempt.status, attempt.delivery) == ("started", "sending")
    return attempt


def after_the_stripe_call(statement: Statement, now: datetime) -> PaymentAttempt:
    """The attempt saved STARTED and Stripe called, then the process dies: only Stripe knows."""
    attempt = begin(statement, now)
    payment_intents.payment_intent_create(attempt)
    return attempt


def lease_expires(attempt: PaymentAttempt) -> None:
    """The process holding the attempt died: its lease runs out (send_lease(), 77 s by default)."""
    PaymentAttempt.objects.filter(pk=attempt.pk).update(sending_until=timezone.now() - timedelta(seconds=1))
