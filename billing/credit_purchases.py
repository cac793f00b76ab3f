"""Buying credits by card: one off-session PaymentIntent per purchase, made safe exactly as a
statement's charge is (billing.payments):

- The CreditPurchase is saved STARTED and `sending` (held until `sending_until`) in its own
  committed transaction before Stripe is called; the PaymentIntent carries the idempotency key
  `credit_purchase:{id}` and the metadata credit_purchase_id and workspace.
- The outcome is recorded under the purchase's row lock by `purchase_settle`, from the charge's
  own answer, Stripe's webhook (billing.stripe_events) or the reconciliation: whichever comes
  first records; the lot is granted once (CreditLot.purchase is one-to-one), only on success.
- A request that never reached Stripe is sent again at once (RESEND_PAUSES), then by the
  every-minute job with the same key; one whose answer was lost is looked up in Stripe (by id, or
  among the customer's charges by metadata) before anything is sent again.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import stripe
from django.db import transaction
from django.utils import timezone

from workspaces.models import Workspace

from .credits import CreditsInvalid, purchase_lot_grant
from .models import CreditPurchase, PaymentAttempt, StripeCustomer
from .payment_intents import CURRENCY, LOST_ANSWER_NOTE, RESEND_PAUSES
from .payment_outcomes import NO_CARD, Outcome, outcome_of_intent
from .payments import send_lease
from .stripe_api import failure_reason, never_sent, object_id, payments_configured, stripe_client

logger = logging.getLogger(__name__)

PURCHASE_MIN = Decimal(5)  # USD
PURCHASE_MAX = Decimal(10000)  # USD
Delivery = PaymentAttempt.Delivery
Code = PaymentAttempt.FailureCode


def purchase_amount_cents(amount: Decimal, field: str = "amount") -> int:
    """The one rule for an amount of credits to buy (the API, the dashboard, auto-recharge)."""
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        raise CreditsInvalid(errors={field: ["An amount of USD with at most 2 decimal places."]})
    if not PURCHASE_MIN <= amount <= PURCHASE_MAX:
        raise CreditsInvalid(errors={field: [f"Credits are bought from {PURCHASE_MIN} to {PURCHASE_MAX:,} USD at a time."]})
    return int(amount * 100)


def credit_purchase(
    workspace: Workspace, amount: Decimal, *, actor: str, crossing: int | None = None, now: datetime | None = None
) -> CreditPurchase:
    """Buy `amount` USD of credits with the workspace's card; the lot is granted once the payment
    succeeded. Returns the purchase as it stands (succeeded, failed, or started: not settled yet,
    the reconciliation finishes it). Call outside a transaction."""
    cents = purchase_amount_cents(amount)
    stripe_client()  # raises PaymentsNotConfigured before anything is saved
    purchase = _begin(workspace, cents, actor=actor, crossing=crossing, now=now or timezone.now())
    if purchase.status != CreditPurchase.Status.STARTED:
        return purchase
    return _send(purchase, now=now or timezone.now())


def _begin(workspace: Workspace, cents: int, *, actor: str, crossing: int | None, now: datetime) -> CreditPurchase:
    with transaction.atomic():
        purchase = CreditPurchase.objects.create(
            workspace=workspace, amount_cents=cents, created_by=actor[:200], crossing=crossing,
            sending_until=timezone.now() + send_lease(),
        )  # fmt: skip
        purchase.idempotency_key = f"credit_purchase:{purchase.pk}"
        purchase.save(update_fields=["idempotency_key"])
        customer = StripeCustomer.objects.filter(workspace=workspace).first()
        if customer is None or not customer.default_payment_method:
            purchase_settle(purchase, Outcome(CreditPurchase.Status.FAILED, error=NO_CARD, code=Code.NO_CARD), now=now)
    return purchase


def _send(purchase: CreditPurchase, *, now: datetime) -> CreditPurchase:
    outcome = _intent_create(purchase)
    with transaction.atomic():
        purchase = CreditPurchase.objects.select_for_update().get(pk=purchase.pk)
        if purchase.status == CreditPurchase.Status.STARTED and outcome.status == CreditPurchase.Status.STARTED:
            purchase.delivery, purchase.sending_until, purchase.error = outcome.delivery, None, outcome.error
            purchase.payment_intent_id = purchase.payment_intent_id or outcome.payment_intent_id
            purchase.save(update_fields=["delivery", "sending_until", "error", "payment_intent_id"])
        else:
            purchase_settle(purchase, outcome, now=now)
    return purchase


def _params(purchase: CreditPurchase, customer: StripeCustomer) -> dict[str, Any]:
    return {
        "amount": purchase.amount_cents,
        "currency": CURRENCY,
        "customer": customer.customer_id,
        "payment_method": customer.default_payment_method,
        "payment_method_types": ["card"],
        "off_session": True,
        "confirm": True,
        "metadata": {"credit_purchase_id": str(purchase.pk), "workspace": purchase.workspace.slug},
    }


def _intent_create(purchase: CreditPurchase) -> Outcome:
    """As billing.payment_intents.payment_intent_create: resend at once only what provably never
    reached Stripe; anything else unknown, for the reconciliation."""
    customer = StripeCustomer.objects.get(workspace_id=purchase.workspace_id)
    client = stripe_client()
    options = {"idempotency_key": purchase.idempotency_key, "max_network_retries": 0}
    for pause in (*RESEND_PAUSES, None):
        try:
            intent = client.v1.payment_intents.create(params=_params(purchase, customer), options=options)
        except stripe.CardError as exc:
            error = exc.error.to_dict() if exc.error is not None else {}
            message = f"{exc.user_message or 'The card was declined.'} ({exc.code or 'card_error'})"
            return Outcome(CreditPurchase.Status.FAILED, object_id(error.get("payment_intent")), message, code=Code.DECLINED)
        except stripe.InvalidRequestError as exc:
            return Outcome(CreditPurchase.Status.FAILED, error=f"Stripe refused the charge: {exc.user_message or exc}", code=Code.REFUSED)
        except stripe.StripeError as exc:
            if never_sent(exc):
                if pause is not None:
                    time.sleep(pause)
                    continue
                return Outcome(CreditPurchase.Status.STARTED, error=failure_reason(exc), delivery=Delivery.NOT_SENT)
            return Outcome(CreditPurchase.Status.STARTED, error=LOST_ANSWER_NOTE.format(reason=failure_reason(exc)), delivery=Delivery.UNKNOWN)
        return outcome_of_intent(intent.to_dict())
    raise AssertionError("unreachable")


def purchase_settle(purchase: CreditPurchase, outcome: Outcome, *, now: datetime) -> bool:
    """Record a purchase's outcome, under its row lock (or in the transaction that created it).
    The first outcome wins, except that a success Stripe reports corrects a recorded failure (the
    money did move). A success grants the lot, once. A failed auto-recharge disables auto-recharge
    (billing.auto_recharge). Returns whether anything changed."""
    if outcome.payment_intent_id and not purchase.payment_intent_id:
        purchase.payment_intent_id = outcome.payment_intent_id
        purchase.save(update_fields=["payment_intent_id"])
    if outcome.status == CreditPurchase.Status.STARTED:
        return False
    succeeded = outcome.status == CreditPurchase.Status.SUCCEEDED
    if purchase.status != CreditPurchase.Status.STARTED and not (succeeded and purchase.status == CreditPurchase.Status.FAILED):
        return False
    purchase.status = outcome.status
    purchase.delivery, purchase.sending_until = Delivery.ANSWERED, None
    purchase.error = "" if succeeded else outcome.error
    purchase.failure_code = "" if succeeded else (outcome.code or Code.DECLINED)
    purchase.finished_at = purchase.finished_at or now
    purchase.save(update_fields=["status", "delivery", "sending_until", "error", "failure_code", "finished_at"])
    from .auto_recharge import recharge_settled

    if succeeded:
        purchase_lot_grant(purchase, now=now)
    recharge_settled(purchase, succeeded=succeeded)
    return True


def purchase_of_intent(intent: dict[str, Any]) -> CreditPurchase | None:
    """The purchase a PaymentIntent belongs to (by its id, else its metadata), or None."""
    purchase = CreditPurchase.objects.filter(payment_intent_id=intent["id"]).first()
    if purchase is not None:
        return purchase
    try:
        purchase_id = int((intent.get("metadata") or {})["credit_purchase_id"])
    except (KeyError, TypeError, ValueError):
        return None
    purchase = CreditPurchase.objects.filter(pk=purchase_id).first()
    if purchase is None or purchase.payment_intent_id not in (None, "", intent["id"]):
        return None
    return purchase


def _intent_of(client: stripe.StripeClient, purchase: CreditPurchase, customer: StripeCustomer) -> dict | None:
    if purchase.payment_intent_id:
        return client.v1.payment_intents.retrieve(purchase.payment_intent_id).to_dict()
    since = int((purchase.created_at - timedelta(hours=1)).timestamp())
    charges = client.v1.charges.list(params={"customer": customer.customer_id, "created": {"gt": since}, "limit": 100})
    for charge in charges.auto_paging_iter():
        intent_id = object_id(charge.payment_intent)
        if not intent_id:
            continue
        intent = client.v1.payment_intents.retrieve(intent_id).to_dict()
        if (intent.get("metadata") or {}).get("credit_purchase_id") == str(purchase.pk):
            return intent
    return None


def credit_purchases_reconcile(*, now: datetime | None = None) -> int:
    """The every-minute job: purchases STARTED and not held by a live request are looked up in
    Stripe and settled, or sent again with their key when Stripe never got them. Returns how
    many were settled or sent."""
    now = now or timezone.now()
    if not payments_configured():
        return 0
    done = 0
    open_ids = (
        CreditPurchase.objects.filter(status=CreditPurchase.Status.STARTED)
        .exclude(delivery=Delivery.SENDING, sending_until__gt=timezone.now())
        .values_list("pk", flat=True)
    )
    for purchase_id in list(open_ids):
        resend = False
        with transaction.atomic():
            purchase = CreditPurchase.objects.select_for_update().select_related("workspace").get(pk=purchase_id)
            if purchase.status != CreditPurchase.Status.STARTED:
                continue
            customer = StripeCustomer.objects.filter(workspace_id=purchase.workspace_id).first()
            if customer is None:
                continue
            intent = None
            if purchase.delivery != Delivery.NOT_SENT:
                try:
                    intent = _intent_of(stripe_client(), purchase, customer)
                except stripe.StripeError as exc:
                    logger.warning("Reconciling credit purchase %s: %r", purchase.pk, exc)
                    continue
            if intent is not None:
                purchase_settle(purchase, outcome_of_intent(intent), now=now)
            else:
                purchase.delivery, purchase.sending_until = Delivery.SENDING, timezone.now() + send_lease()
                purchase.save(update_fields=["delivery", "sending_until"])
                resend = True
        if resend:
            _send(purchase, now=now)
        done += 1
    return done
