"""Recording what Stripe said about a payment attempt, and what follows: the statement paid, or
payment_failed with its next retry and an e-mail to the workspace's owners and admins.

The charge path (billing.payments) and Stripe's webhook events (billing.stripe_events) both record
through `settle`, under the statement's row lock: whichever arrives first records, the other
changes nothing (except that a success Stripe reports corrects an attempt recorded as failed).

Retry schedule (dunning): a failed charge is retried automatically 1, 3 and 7 days after the
first failure (RETRY_AFTER_FIRST_FAILURE, run by the every-minute task
billing.tasks.payments_retry_due); after the retry on day 7 fails too, the statement stays
`payment_failed` with no next retry (4 attempts in all). A workspace with no card fails the same
way, without calling Stripe, and the e-mail asks for a card.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from core.money import usd_cents

from .events import payment_failed_publish, payment_succeeded_publish
from .invoices import receipt_emails_after_commit
from .models import PaymentAttempt, Statement, StatementAudit

logger = logging.getLogger(__name__)

# Changing this changes when customers are charged again; the README documents it.
RETRY_AFTER_FIRST_FAILURE: tuple[timedelta, ...] = (timedelta(days=1), timedelta(days=3), timedelta(days=7))
CHARGEABLE = (Statement.Status.FINALIZED, Statement.Status.PAYMENT_FAILED)
NO_CARD = "No card on file: add one on the dashboard and the statement is charged again at once."
ACTOR = "stripe"


@dataclass(frozen=True)
class Outcome:
    """What one call to Stripe says about an attempt. `status` STARTED: not settled yet, and
    `delivery` says why (NOT_SENT: Stripe never got it; UNKNOWN: it may have; ANSWERED with a
    PaymentIntent still processing)."""

    status: str
    payment_intent_id: str | None = None
    error: str = ""
    delivery: str = PaymentAttempt.Delivery.ANSWERED
    code: str = ""  # a PaymentAttempt.FailureCode when FAILED


def retry_at(first_failure_at: datetime, failures: int) -> datetime | None:
    """When a statement that has failed `failures` times is tried again (None: no more)."""
    if failures < 1 or failures > len(RETRY_AFTER_FIRST_FAILURE):
        return None
    return first_failure_at + RETRY_AFTER_FIRST_FAILURE[failures - 1]


def outcome_of_intent(intent: dict[str, Any]) -> Outcome:
    status = intent.get("status")
    if status == "succeeded":
        return Outcome(PaymentAttempt.Status.SUCCEEDED, intent.get("id"))
    if status in ("processing", "requires_capture", "requires_confirmation"):
        return Outcome(PaymentAttempt.Status.STARTED, intent.get("id"))
    if status == "requires_action":
        error = "The bank asked for authentication, which cannot happen off-session: add another card."
        return Outcome(PaymentAttempt.Status.FAILED, intent.get("id"), error, code=PaymentAttempt.FailureCode.AUTHENTICATION)
    else:
        last = intent.get("last_payment_error") or {}
        error = last.get("message") or f"Payment {status or 'failed'}."
        if last.get("code"):
            error += f" ({last['code']})"
    return Outcome(PaymentAttempt.Status.FAILED, intent.get("id"), error, code=PaymentAttempt.FailureCode.DECLINED)


def settle(statement: Statement, attempt: PaymentAttempt, outcome: Outcome, *, now: datetime, actor: str = ACTOR) -> bool:
    """Record an attempt's outcome and move the statement accordingly. Call under the statement's
    row lock. The first outcome recorded wins; later ones change nothing, except that a success
    Stripe reports (a webhook) corrects an attempt recorded as failed: the money did move."""
    if outcome.payment_intent_id and not attempt.payment_intent_id:
        attempt.payment_intent_id = outcome.payment_intent_id
        attempt.save(update_fields=["payment_intent_id"])
    if outcome.status == PaymentAttempt.Status.STARTED:
        return False
    succeeded = outcome.status == PaymentAttempt.Status.SUCCEEDED
    if attempt.status != PaymentAttempt.Status.STARTED and not (
        succeeded and attempt.status == PaymentAttempt.Status.FAILED
    ):
        return False
    corrected = attempt.status == PaymentAttempt.Status.FAILED
    attempt.status = outcome.status
    attempt.delivery, attempt.sending_until = PaymentAttempt.Delivery.ANSWERED, None
    attempt.error = "" if succeeded else outcome.error
    attempt.failure_code = "" if succeeded else (outcome.code or PaymentAttempt.FailureCode.DECLINED)
    attempt.finished_at = attempt.finished_at if corrected else now
    attempt.save(update_fields=["status", "delivery", "sending_until", "error", "failure_code", "finished_at"])
    if succeeded:
        _statement_paid(statement, attempt, now=now, actor=actor, corrected=corrected)
    else:
        _statement_failed(statement, attempt, now=now, actor=actor)
    return True


def _statement_paid(statement: Statement, attempt: PaymentAttempt, *, now: datetime, actor: str, corrected: bool) -> None:
    note = f"attempt {attempt.number}: {usd_cents(attempt.amount_cents)} paid, PaymentIntent {attempt.payment_intent_id}"
    if corrected:
        note += " (Stripe reported success after the attempt was recorded as failed)"
    if statement.status in CHARGEABLE:
        statement.status = Statement.Status.PAID
        statement.paid_at = now
        statement.next_retry_at = None
        statement.save(update_fields=["status", "paid_at", "next_retry_at"])
        receipt_emails_after_commit(statement)
        payment_succeeded_publish(statement, attempt, now=now)
    else:
        note += f"; the statement is {statement.status} and stays so: refund or apply the payment by hand"
    StatementAudit.objects.create(statement=statement, actor=actor, action="payment_succeeded", note=note)


def _statement_failed(statement: Statement, attempt: PaymentAttempt, *, now: datetime, actor: str) -> None:
    note = f"attempt {attempt.number}: {usd_cents(attempt.amount_cents)} failed: {attempt.error}"
    if statement.status not in CHARGEABLE:
        StatementAudit.objects.create(
            statement=statement, actor=actor, action="payment_failed", note=f"{note}; the statement is {statement.status}"
        )
        return
    failures = list(
        statement.payment_attempts.filter(status=PaymentAttempt.Status.FAILED).order_by("number").values_list(
            "finished_at", flat=True
        )
    )
    statement.status = Statement.Status.PAYMENT_FAILED
    statement.next_retry_at = retry_at(failures[0] or now, len(failures))
    statement.save(update_fields=["status", "next_retry_at"])
    note += (
        f"; next retry {statement.next_retry_at:%Y-%m-%d %H:%M} UTC"
        if statement.next_retry_at
        else "; no automatic retry left"
    )
    StatementAudit.objects.create(statement=statement, actor=actor, action="payment_failed", note=note)
    payment_failed_publish(statement, attempt, now=now)
    transaction.on_commit(functools.partial(_notify_failed, statement.pk, attempt.pk, statement.workspace_id))


def _notify_failed(statement_id: int, attempt_id: int, workspace_id: int) -> None:
    """After the commit: enqueue the e-mails to the owners and admins (billing.emails), sent and
    retried by a worker."""
    from .emails import payment_failed_emails_enqueue

    try:
        payment_failed_emails_enqueue(statement_id, attempt_id, workspace_id)
    except Exception:  # the broker down must not undo or stop billing
        logger.exception("Could not enqueue the e-mails of the payment failure of statement %s", statement_id)
