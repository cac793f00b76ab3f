"""Stripe as the payment processor: Meterboard keeps the statements, Stripe moves the money.

Each workspace has one Stripe Customer (StripeCustomer) whose default payment method is the card
the workspace added (a SetupIntent confirmed in the browser, then `payment_method_set`). A
finalized statement is charged `amount_due_cents` in USD by one off-session PaymentIntent per
attempt.

Never charged twice
- A PaymentAttempt is saved STARTED, in its own committed transaction, before Stripe is called.
  The PaymentIntent carries the idempotency key `statement:{id}:attempt:{n}` and the metadata
  statement_id, attempt, workspace and period. The outcome is recorded after the call.
- While an attempt is STARTED (a crash, or a timeout, between the call and its outcome) no new
  PaymentIntent is made for the statement: the attempt is reconciled first, under the statement's
  row lock. Its PaymentIntent is found by its id when that was recorded, else among the
  customer's charges by the PaymentIntent metadata, and its outcome is recorded. When none is
  found, an attempt younger than IN_FLIGHT may still be in another process's hands and is left
  alone; an older one never reached Stripe and is sent again with the same idempotency key, which
  Stripe answers with the original result if it did arrive after all.
- The webhooks `payment_intent.succeeded` / `payment_intent.payment_failed` record outcomes
  through the same function as the charge path: whichever arrives first records, the other
  changes nothing.
- Paid statements are never charged again; a statement with nothing due (zero, or a total below
  the minimum charge carried to next month) is not charged at all.

Retry schedule (dunning)
A failed charge makes the statement `payment_failed` and e-mails the workspace's owners and
admins. It is retried automatically 1, 3 and 7 days after its first failure
(RETRY_AFTER_FIRST_FAILURE, run by the hourly task billing.tasks.payments_retry_due). If the retry
on day 7 fails as well, the statement stays `payment_failed` with no next retry (4 attempts in
all). Adding a card (`payment_method_set`) retries every `payment_failed` statement of the
workspace at once, whatever the schedule says. A workspace with no card fails the same way,
without calling Stripe, and the e-mail asks for a card.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from workspaces.models import Membership, Workspace

from .models import PaymentAttempt, Statement, StatementAudit, StripeCustomer, StripeWebhookEvent

logger = logging.getLogger(__name__)

# Changing this changes when customers are charged again; the README documents it.
RETRY_AFTER_FIRST_FAILURE: tuple[timedelta, ...] = (timedelta(days=1), timedelta(days=3), timedelta(days=7))
# Longer than any Stripe call can take (the client times out after 80 s and retries twice), so a
# STARTED attempt older than this is not being sent by anyone any more.
IN_FLIGHT = timedelta(minutes=15)
CURRENCY = "usd"
CHARGEABLE = (Statement.Status.FINALIZED, Statement.Status.PAYMENT_FAILED)
NO_CARD = "No card on file: add one on the dashboard and the statement is charged again at once."
ACTOR = "stripe"


class PaymentsNotConfigured(RuntimeError):
    """STRIPE_SECRET_KEY is not set."""


class PaymentMethodRejected(ValueError):
    """Stripe would not take this payment method (no such id, declined, another customer's)."""


# --- Stripe client -----------------------------------------------------------------------------


def payments_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    # Retried requests reuse the idempotency key, so a retry never makes a second object.
    return stripe.StripeClient(api_key=api_key, base_addresses={"api": api_base}, max_network_retries=2)


def stripe_client() -> stripe.StripeClient:
    if not payments_configured():
        raise PaymentsNotConfigured("Payments are not configured: set STRIPE_SECRET_KEY.")
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


def _id(value: Any) -> str | None:
    """The id of an expandable field: a plain id, an expanded object, or nothing."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("id")
    return getattr(value, "id", None)


# --- Customers and cards -----------------------------------------------------------------------


def customer_ensure(workspace: Workspace) -> StripeCustomer:
    """The workspace's Stripe Customer, created on first use. One per workspace, also when two
    requests race: the unique constraint decides, and the loser's customer is deleted."""
    existing = StripeCustomer.objects.filter(workspace=workspace).first()
    if existing is not None:
        return existing
    client = stripe_client()
    owner = (
        Membership.objects.filter(workspace=workspace, role=Membership.Role.OWNER)
        .exclude(user__email="")
        .order_by("created_at")
        .values_list("user__email", flat=True)
        .first()
    )
    params: dict[str, Any] = {
        "name": workspace.name,
        "metadata": {"workspace_id": str(workspace.pk), "workspace_slug": workspace.slug},
    }
    if owner:
        params["email"] = owner
    created = client.v1.customers.create(
        params=params, options={"idempotency_key": f"workspace:{workspace.pk}:{workspace.slug}:customer"}
    )
    try:
        with transaction.atomic():
            return StripeCustomer.objects.create(workspace=workspace, customer_id=created.id)
    except IntegrityError:
        winner = StripeCustomer.objects.get(workspace=workspace)
        if winner.customer_id != created.id:
            try:
                client.v1.customers.delete(created.id)
            except stripe.StripeError:
                logger.warning("Could not delete the unused Stripe customer %s of %s", created.id, workspace.slug)
        return winner


def setup_intent_create(workspace: Workspace) -> dict[str, str]:
    """A SetupIntent for the browser to collect a card for off-session charges."""
    customer = customer_ensure(workspace)
    intent = stripe_client().v1.setup_intents.create(
        params={
            "customer": customer.customer_id,
            "usage": "off_session",
            "payment_method_types": ["card"],
            "metadata": {"workspace_id": str(workspace.pk), "workspace_slug": workspace.slug},
        }
    )
    return {"client_secret": intent.client_secret, "setup_intent": intent.id}


def payment_method_set(workspace: Workspace, payment_method_id: str) -> StripeCustomer:
    """Attach the payment method to the workspace's customer and make it the default, in Stripe
    and here; then retry the workspace's `payment_failed` statements (a task, after commit).

    Raises PaymentMethodRejected when Stripe refuses the payment method."""
    customer = customer_ensure(workspace)
    client = stripe_client()
    try:
        method = client.v1.payment_methods.attach(payment_method_id, params={"customer": customer.customer_id})
    except stripe.CardError as exc:
        raise PaymentMethodRejected(f"The card was declined: {exc.user_message or 'no reason given'}") from exc
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404 or exc.code == "resource_missing":
            raise PaymentMethodRejected(f"No such payment method: '{payment_method_id}'.") from exc
        raise PaymentMethodRejected(exc.user_message or "Stripe refused this payment method.") from exc
    # Stripe turns test ids such as pm_card_visa into a new payment method: keep the real id.
    client.v1.customers.update(
        customer.customer_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    with transaction.atomic():
        StripeCustomer.objects.filter(pk=customer.pk).update(default_payment_method=method.id)
        customer.default_payment_method = method.id
        if Statement.objects.filter(workspace=workspace, status=Statement.Status.PAYMENT_FAILED).exists():
            transaction.on_commit(functools.partial(_enqueue_workspace_retry, workspace.pk))
    return customer


def _enqueue_workspace_retry(workspace_id: int) -> None:
    from . import tasks

    tasks.payments_retry_workspace.delay(workspace_id)


# --- Charging ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What Stripe says about one attempt. `status` STARTED: still unknown (processing)."""

    status: str
    payment_intent_id: str | None = None
    error: str = ""


@dataclass
class ChargeReport:
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0

    def count(self, attempt: PaymentAttempt | None) -> None:
        if attempt is None or attempt.status == PaymentAttempt.Status.STARTED:
            self.skipped += 1
        elif attempt.status == PaymentAttempt.Status.SUCCEEDED:
            self.succeeded += 1
        else:
            self.failed += 1


def retry_at(first_failure_at: datetime, failures: int) -> datetime | None:
    """When a statement that has failed `failures` times is tried again (None: no more)."""
    if failures < 1 or failures > len(RETRY_AFTER_FIRST_FAILURE):
        return None
    return first_failure_at + RETRY_AFTER_FIRST_FAILURE[failures - 1]


def statement_charge(statement: Statement, *, now: datetime | None = None, retry_now: bool = False) -> PaymentAttempt | None:
    """Charge what the statement owes, at most once. Returns the attempt made or settled, or None
    when there is nothing to do (paid, void, nothing due, or a failed statement whose next retry
    has not come: `retry_now` skips that wait, e.g. right after a new card was added).

    A STARTED attempt is reconciled instead of making a new one (see the module docstring); the
    returned attempt is still STARTED only when its outcome is unknown yet. Call it outside a
    transaction: the STARTED attempt must be committed before Stripe is called.
    """
    return _charge(statement.pk, now=now or timezone.now(), retry_now=retry_now)


def _charge(statement_id: int, *, now: datetime, retry_now: bool = False) -> PaymentAttempt | None:
    stripe_client()  # raises PaymentsNotConfigured before any attempt is saved
    begun = _charge_begin(statement_id, now=now, retry_now=retry_now)
    if begun is None:
        return None
    attempt, send = begun
    if not send:
        return attempt  # reconciled (settled, or still unknown), or failed for want of a card
    return _record(attempt.pk, _payment_intent_create(attempt), now=now)


def _charge_begin(statement_id: int, *, now: datetime, retry_now: bool) -> tuple[PaymentAttempt, bool] | None:
    """Under the statement's lock: reconcile a STARTED attempt, or save a new STARTED attempt to
    send (True), or a failed one when there is no card. Committed on return, so the STARTED
    attempt exists before Stripe is asked to charge."""
    with transaction.atomic():
        statement = Statement.objects.select_for_update().get(pk=statement_id)
        if statement.status not in CHARGEABLE or statement.amount_due_cents <= 0:
            return None
        customer = StripeCustomer.objects.filter(workspace_id=statement.workspace_id).first()
        pending = statement.payment_attempts.filter(status=PaymentAttempt.Status.STARTED).order_by("number").first()
        if pending is not None:
            _reconcile(statement, pending, customer, now=now)
            return pending, False
        due = statement.next_retry_at is not None and statement.next_retry_at <= now
        if statement.status == Statement.Status.PAYMENT_FAILED and not (due or retry_now):
            return None
        number = (statement.payment_attempts.aggregate(n=Max("number"))["n"] or 0) + 1
        attempt = PaymentAttempt.objects.create(
            statement=statement,
            number=number,
            amount_cents=statement.amount_due_cents,
            idempotency_key=f"statement:{statement.pk}:attempt:{number}",
        )
        if customer is None or not customer.default_payment_method:
            _settle(statement, attempt, Outcome(PaymentAttempt.Status.FAILED, error=NO_CARD), now=now)
            return attempt, False
        return attempt, True


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


def _payment_intent_create(attempt: PaymentAttempt) -> Outcome:
    """Ask Stripe to charge the attempt; STARTED when the answer is unknown (network, 5xx)."""
    statement = Statement.objects.select_related("workspace").get(pk=attempt.statement_id)
    customer = StripeCustomer.objects.get(workspace_id=statement.workspace_id)
    client = stripe_client()
    try:
        intent = client.v1.payment_intents.create(
            params=_intent_params(attempt, statement, customer),
            options={"idempotency_key": attempt.idempotency_key},
        )
    except stripe.CardError as exc:
        return Outcome(PaymentAttempt.Status.FAILED, _intent_id_of_decline(client, exc), _decline_message(exc))
    except stripe.InvalidRequestError as exc:
        # Refused before any charge (a detached card, a deleted customer): nothing was created.
        return Outcome(PaymentAttempt.Status.FAILED, error=f"Stripe refused the charge: {exc.user_message or exc}")
    except stripe.StripeError as exc:
        logger.warning("Charge of statement %s attempt %s: outcome unknown (%r); it is reconciled later",
                       attempt.statement_id, attempt.number, exc)
        return Outcome(PaymentAttempt.Status.STARTED)
    return outcome_of_intent(intent.to_dict())


def _decline_message(exc: stripe.CardError) -> str:
    code = exc.code or "card_error"
    return f"{exc.user_message or 'The card was declined.'} ({code})"


def _intent_id_of_decline(client: stripe.StripeClient, exc: stripe.CardError) -> str | None:
    """A declined confirmation still made a PaymentIntent: Stripe names it in the error, or
    names the failed charge, which names it."""
    error = exc.error.to_dict() if exc.error is not None else {}
    intent_id = _id(error.get("payment_intent"))
    if intent_id:
        return intent_id
    if error.get("charge"):
        try:
            return _id(client.v1.charges.retrieve(error["charge"]).payment_intent)
        except stripe.StripeError:
            return None
    return None


def outcome_of_intent(intent: dict[str, Any]) -> Outcome:
    status = intent.get("status")
    if status == "succeeded":
        return Outcome(PaymentAttempt.Status.SUCCEEDED, intent.get("id"))
    if status in ("processing", "requires_capture", "requires_confirmation"):
        return Outcome(PaymentAttempt.Status.STARTED, intent.get("id"))
    if status == "requires_action":
        error = "The bank asked for authentication, which cannot happen off-session: add another card."
    else:
        last = intent.get("last_payment_error") or {}
        error = last.get("message") or f"Payment {status or 'failed'}."
        if last.get("code"):
            error += f" ({last['code']})"
    return Outcome(PaymentAttempt.Status.FAILED, intent.get("id"), error)


def _reconcile(statement: Statement, attempt: PaymentAttempt, customer: StripeCustomer | None, *, now: datetime) -> None:
    """Settle a STARTED attempt from what Stripe knows. Runs under the statement's lock, so no
    two processes reconcile (or send again) the same attempt at once."""
    if customer is None or not payments_configured():
        return
    client = stripe_client()
    try:
        intent = _intent_of_attempt(client, attempt, customer)
    except stripe.StripeError as exc:
        logger.warning("Reconciling statement %s attempt %s: %r", statement.pk, attempt.number, exc)
        return
    if intent is not None:
        _settle(statement, attempt, outcome_of_intent(intent), now=now, actor="stripe (reconciled)")
        return
    if timezone.now() - attempt.created_at < IN_FLIGHT:
        return  # perhaps still being sent by another process
    logger.warning("Statement %s attempt %s never reached Stripe; sending it again with its key",
                   statement.pk, attempt.number)
    _settle(statement, attempt, _payment_intent_create(attempt), now=now, actor="stripe (sent again)")


def _intent_of_attempt(client: stripe.StripeClient, attempt: PaymentAttempt, customer: StripeCustomer) -> dict | None:
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
        intent_id = _id(charge.payment_intent)
        if not intent_id or intent_id in known:
            continue
        known.add(intent_id)
        intent = client.v1.payment_intents.retrieve(intent_id).to_dict()
        metadata = intent.get("metadata") or {}
        if metadata.get("statement_id") == str(attempt.statement_id) and metadata.get("attempt") == str(attempt.number):
            return intent
    return None


# --- Recording outcomes ------------------------------------------------------------------------


def _record(attempt_id: int, outcome: Outcome, *, now: datetime) -> PaymentAttempt:
    with transaction.atomic():
        statement_id = PaymentAttempt.objects.values_list("statement_id", flat=True).get(pk=attempt_id)
        statement = Statement.objects.select_for_update().get(pk=statement_id)
        attempt = PaymentAttempt.objects.get(pk=attempt_id)
        _settle(statement, attempt, outcome, now=now)
    return attempt


def _settle(statement: Statement, attempt: PaymentAttempt, outcome: Outcome, *, now: datetime, actor: str = ACTOR) -> bool:
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
    attempt.error = "" if succeeded else outcome.error
    attempt.finished_at = attempt.finished_at if corrected else now
    attempt.save(update_fields=["status", "error", "finished_at"])
    if succeeded:
        _statement_paid(statement, attempt, now=now, actor=actor, corrected=corrected)
    else:
        _statement_failed(statement, attempt, now=now, actor=actor)
    return True


def _dollars(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def _statement_paid(statement: Statement, attempt: PaymentAttempt, *, now: datetime, actor: str, corrected: bool) -> None:
    note = f"attempt {attempt.number}: {_dollars(attempt.amount_cents)} paid, PaymentIntent {attempt.payment_intent_id}"
    if corrected:
        note += " (Stripe reported success after the attempt was recorded as failed)"
    if statement.status in CHARGEABLE:
        statement.status = Statement.Status.PAID
        statement.paid_at = now
        statement.next_retry_at = None
        statement.save(update_fields=["status", "paid_at", "next_retry_at"])
    else:
        note += f"; the statement is {statement.status} and stays so: refund or apply the payment by hand"
    StatementAudit.objects.create(statement=statement, actor=actor, action="payment_succeeded", note=note)


def _statement_failed(statement: Statement, attempt: PaymentAttempt, *, now: datetime, actor: str) -> None:
    note = f"attempt {attempt.number}: {_dollars(attempt.amount_cents)} failed: {attempt.error}"
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
    transaction.on_commit(functools.partial(_notify_failed, statement.pk, attempt.pk))


def _notify_failed(statement_id: int, attempt_id: int) -> None:
    from .emails import payment_failed_send

    try:
        payment_failed_send(statement_id, attempt_id)
    except Exception:  # a mail server down must not undo or stop billing
        logger.exception("Could not e-mail the payment failure of statement %s", statement_id)


# --- Runs over many statements -----------------------------------------------------------------


def statements_charge_due(period: date, only: Workspace | None = None, *, now: datetime | None = None) -> ChargeReport:
    """Charge every finalized or payment_failed statement of `period` or an earlier month (of
    `only`, when given), each once: a close that caught up on earlier months charges them too.
    Re-running charges nothing more: paid ones are done, failed ones wait for their retry time, and
    an attempt whose outcome is unknown is reconciled, not repeated."""
    now = now or timezone.now()
    statements = Statement.objects.filter(period__lte=period).exclude(status=Statement.Status.VOID)
    if only is not None:
        statements = statements.filter(workspace=only)
    report = ChargeReport()
    if not payments_configured():
        report.skipped = statements.count()
        logger.warning("STRIPE_SECRET_KEY is not set: %s statements of %s not charged", report.skipped, period)
        return report
    ids = list(
        statements.filter(status__in=CHARGEABLE, amount_due_cents__gt=0).order_by("pk").values_list("pk", flat=True)
    )
    report.skipped = statements.count() - len(ids)
    for statement_id in ids:
        report.count(_charge(statement_id, now=now))
    return report


def payments_retry_due(*, now: datetime | None = None) -> ChargeReport:
    """Retry failed statements whose next retry has come, and settle attempts left STARTED."""
    now = now or timezone.now()
    report = ChargeReport()
    if not payments_configured():
        return report
    due = Statement.objects.filter(
        status=Statement.Status.PAYMENT_FAILED, next_retry_at__lte=now, amount_due_cents__gt=0
    ).values_list("pk", flat=True)
    stuck = Statement.objects.filter(
        status__in=CHARGEABLE,
        payment_attempts__status=PaymentAttempt.Status.STARTED,
        payment_attempts__created_at__lte=timezone.now() - IN_FLIGHT,
    ).values_list("pk", flat=True)
    for statement_id in sorted(set(due) | set(stuck)):
        report.count(_charge(statement_id, now=now))
    return report


def workspace_retry_failed(workspace_id: int, *, now: datetime | None = None) -> ChargeReport:
    """Charge the workspace's payment_failed statements now (a card was just added)."""
    now = now or timezone.now()
    report = ChargeReport()
    ids = Statement.objects.filter(
        workspace_id=workspace_id, status=Statement.Status.PAYMENT_FAILED, amount_due_cents__gt=0
    ).order_by("period").values_list("pk", flat=True)
    for statement_id in list(ids):
        report.count(_charge(statement_id, now=now, retry_now=True))
    return report


# --- Webhooks ----------------------------------------------------------------------------------

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
        outcome = Outcome(PaymentAttempt.Status.FAILED, intent_id, outcome.error or "Payment failed.")
    _settle(statement, attempt, outcome, now=now, actor="stripe webhook")
    return True
