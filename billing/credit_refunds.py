"""Paying purchased credits back to the card (staff, from the Django admin).

Safe as a charge is: the REFUND entry that takes the credits out of the wallet is committed first,
with the CreditRefund STARTED, under the workspace's lock (so no close consumes them meanwhile);
then Stripe is asked to refund the purchase's PaymentIntent with the key `credit_refund:{id}`.
Stripe refusing (nothing refunded) gives the credits back with a REVERSAL entry; an answer lost is
asked again with the same key by the every-minute job (Stripe answers a repeated key with the
original result), so the card is never refunded twice nor the wallet emptied for nothing."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

import stripe
from django.db import transaction
from django.utils import timezone

from core.errors import ServiceError

from .credits import _balance_changed, remaining_add
from .models import CreditEntry, CreditLot, CreditRefund
from .stripe_api import failure_reason, payments_configured, stripe_client

logger = logging.getLogger(__name__)


class RefundRefused(ServiceError):
    """This lot cannot be refunded."""

    status = 409


def credit_lot_refund(lot: CreditLot, *, actor: str, now: datetime | None = None) -> CreditRefund:
    """Refund what is left of a purchased lot (whole cents) to the card that bought it."""
    from .close import _lock

    now = now or timezone.now()
    stripe_client()  # PaymentsNotConfigured before anything is written
    with transaction.atomic():
        _lock([lot.workspace_id])
        lot = CreditLot.objects.select_for_update(of=("self",)).select_related("purchase").get(pk=lot.pk)
        if lot.purchase is None or not lot.purchase.payment_intent_id:
            raise RefundRefused("Only credits bought by card are refunded; granted credits are not.")
        cents = int((lot.remaining * 100).to_integral_value(rounding=ROUND_DOWN))
        if cents <= 0:
            raise RefundRefused("Nothing is left of this lot to refund.")
        amount = Decimal(cents) / 100
        remaining_add(lot.pk, -amount)
        entry = CreditEntry.objects.create(
            workspace_id=lot.workspace_id, lot=lot, kind=CreditEntry.Kind.REFUND, amount=-amount,
            note=f"refunded to the card by {actor}"[:300], created_at=now,
        )  # fmt: skip
        refund = CreditRefund.objects.create(entry=entry, purchase=lot.purchase, amount_cents=cents, created_by=actor[:200])
        _balance_changed(lot.workspace_id)
    return _send(refund, now=now)


def _send(refund: CreditRefund, *, now: datetime) -> CreditRefund:
    params = {"payment_intent": refund.purchase.payment_intent_id, "amount": refund.amount_cents,
              "metadata": {"credit_refund_id": str(refund.pk)}}
    try:
        answer = stripe_client().v1.refunds.create(
            params=params, options={"idempotency_key": f"credit_refund:{refund.pk}", "max_network_retries": 0}
        )
    except (stripe.InvalidRequestError, stripe.CardError) as exc:
        return _settle(refund.pk, None, error=f"Stripe refused the refund: {exc.user_message or exc}", now=now)
    except stripe.StripeError as exc:
        CreditRefund.objects.filter(pk=refund.pk).update(error=f"Not settled yet: {failure_reason(exc)}")
        refund.refresh_from_db()
        return refund
    return _settle(refund.pk, answer.id, error="" if answer.status in ("succeeded", "pending") else f"Refund {answer.status}", now=now)


def _settle(refund_id: int, stripe_refund_id: str | None, *, error: str, now: datetime) -> CreditRefund:
    with transaction.atomic():
        refund = CreditRefund.objects.select_for_update().select_related("entry").get(pk=refund_id)
        if refund.status != CreditRefund.Status.STARTED:
            return refund
        refund.stripe_refund_id = stripe_refund_id
        refund.status = CreditRefund.Status.FAILED if error else CreditRefund.Status.SUCCEEDED
        refund.error, refund.finished_at = error, now
        refund.save(update_fields=["stripe_refund_id", "status", "error", "finished_at"])
        if error:  # nothing was paid back: the credits return to the wallet
            entry = refund.entry
            remaining_add(entry.lot_id, -entry.amount)
            CreditEntry.objects.create(
                workspace_id=entry.workspace_id, lot_id=entry.lot_id, kind=CreditEntry.Kind.REVERSAL, amount=-entry.amount,
                note=f"refund failed: {error}"[:300], created_at=now,
            )  # fmt: skip
            _balance_changed(entry.workspace_id)
    return refund


def credit_refunds_resend(*, now: datetime | None = None) -> int:
    """The every-minute job: ask Stripe again, with the same key, about refunds not settled."""
    if not payments_configured():
        return 0
    now = now or timezone.now()
    pending = list(CreditRefund.objects.filter(status=CreditRefund.Status.STARTED).select_related("purchase"))
    for refund in pending:
        _send(refund, now=now)
    return len(pending)
