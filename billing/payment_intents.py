"""Talking to Stripe about one payment attempt's PaymentIntent: creating it (and what a failed
request means: never sent, or sent with its answer lost), and finding it again by its metadata
when its outcome was never recorded. billing.payments decides when to call these."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import stripe

from .models import PaymentAttempt, Statement, StripeCustomer
from .payment_outcomes import Outcome, outcome_of_intent
from .stripe_api import failure_reason, never_sent, object_id, stripe_client

logger = logging.getLogger(__name__)

CURRENCY = "usd"
# A charge whose request never reached Stripe is tried again at once, after each of these pauses.
RESEND_PAUSES = (0.5, 1.0)
LOST_ANSWER_NOTE = "Sent, but Stripe's answer was lost ({reason}): reconciled with Stripe before anything else is sent."


def _intent_params(attempt: PaymentAttempt, statement: Statement, customer: StripeCustomer) -> dict[str, Any]:
    return {
        "amount": attempt.amount_cents,
        "currency": CURRENCY,
        "customer": customer.customer_id,
        "payment_method": customer.default_payment_method,
        "payment_method_types": ["card"],
        "off_session": True,
        "confirm": True,
        "metadata": {
            "statement_id": str(statement.pk),
            "attempt": str(attempt.number),
            "workspace": statement.workspace.slug,
            "period": f"{statement.period:%Y-%m}",
        },
    }


def payment_intent_create(attempt: PaymentAttempt) -> Outcome:
    """Ask Stripe to charge the attempt. A request that provably never reached Stripe is tried
    again at once with the same key (RESEND_PAUSES); any other failure is STARTED and UNKNOWN, for
    the next run to reconcile: a blind resend is never made when Stripe may have acted."""
    statement = Statement.objects.select_related("workspace").get(pk=attempt.statement_id)
    customer = StripeCustomer.objects.get(workspace_id=statement.workspace_id)
    client = stripe_client()
    params = _intent_params(attempt, statement, customer)
    options = {"idempotency_key": attempt.idempotency_key, "max_network_retries": 0}
    for pause in (*RESEND_PAUSES, None):
        try:
            intent = client.v1.payment_intents.create(params=params, options=options)
        except stripe.CardError as exc:
            return Outcome(
                PaymentAttempt.Status.FAILED, _intent_id_of_decline(client, exc), _decline_message(exc),
                code=PaymentAttempt.FailureCode.DECLINED,
            )  # fmt: skip
        except stripe.InvalidRequestError as exc:
            # Refused before any charge (a detached card, a deleted customer): nothing was created.
            return Outcome(
                PaymentAttempt.Status.FAILED, error=f"Stripe refused the charge: {exc.user_message or exc}",
                code=PaymentAttempt.FailureCode.REFUSED,
            )  # fmt: skip
        except stripe.StripeError as exc:
            if never_sent(exc):
                if pause is not None:
                    time.sleep(pause)
                    continue
                logger.warning("Charge of statement %s attempt %s: Stripe unreachable (%s)",
                               attempt.statement_id, attempt.number, failure_reason(exc))
                return Outcome(PaymentAttempt.Status.STARTED, error=failure_reason(exc), delivery=PaymentAttempt.Delivery.NOT_SENT)
            logger.warning("Charge of statement %s attempt %s: outcome unknown (%r); it is reconciled later",
                           attempt.statement_id, attempt.number, exc)
            return Outcome(PaymentAttempt.Status.STARTED, error=LOST_ANSWER_NOTE.format(reason=failure_reason(exc)),
                           delivery=PaymentAttempt.Delivery.UNKNOWN)
        return outcome_of_intent(intent.to_dict())
    raise AssertionError("unreachable")  # the last pause is None


def _decline_message(exc: stripe.CardError) -> str:
    code = exc.code or "card_error"
    return f"{exc.user_message or 'The card was declined.'} ({code})"


def _intent_id_of_decline(client: stripe.StripeClient, exc: stripe.CardError) -> str | None:
    """A declined confirmation still made a PaymentIntent: Stripe names it in the error, or
    names the failed charge, which names it."""
    error = exc.error.to_dict() if exc.error is not None else {}
    intent_id = object_id(error.get("payment_intent"))
    if intent_id:
        return intent_id
    if error.get("charge"):
        try:
            return object_id(client.v1.charges.retrieve(error["charge"]).payment_intent)
        except stripe.StripeError:
            return None
    return None


def intent_of_attempt(client: stripe.StripeClient, attempt: PaymentAttempt, customer: StripeCustomer) -> dict | None:
    """The attempt's PaymentIntent: by its recorded id, else the one among the customer's charges
    since the attempt began whose metadata names this statement and attempt."""
    if attempt.payment_intent_id:
        return client.v1.payment_intents.retrieve(attempt.payment_intent_id).to_dict()
    known = set(
        PaymentAttempt.objects.filter(statement__workspace_id=customer.workspace_id)
        .exclude(payment_intent_id=None)
        .values_list("payment_intent_id", flat=True)
    )
    since = int((attempt.created_at - timedelta(hours=1)).timestamp())
    charges = client.v1.charges.list(params={"customer": customer.customer_id, "created": {"gt": since}, "limit": 100})
    for charge in charges.auto_paging_iter():
        intent_id = object_id(charge.payment_intent)
        if not intent_id or intent_id in known:
            continue
        known.add(intent_id)
        intent = client.v1.payment_intents.retrieve(intent_id).to_dict()
        metadata = intent.get("metadata") or {}
        if metadata.get("statement_id") == str(attempt.statement_id) and metadata.get("attempt") == str(attempt.number):
            return intent
    return None
