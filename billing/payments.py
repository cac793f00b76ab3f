"""Stripe as the payment processor: Meterboard keeps the statements, Stripe moves the money.

Each workspace has one Stripe Customer (StripeCustomer) whose default payment method is the card
the workspace added (a SetupIntent confirmed in the browser, then `payment_method_set`). A
finalized statement is charged `amount_due_cents` in USD by one off-session PaymentIntent per
attempt.

Never charged twice
- A PaymentAttempt is saved STARTED and `sending` (held until `sending_until`, SEND_LEASE), in its
  own committed transaction, before Stripe is called. The PaymentIntent carries the idempotency
  key `statement:{id}:attempt:{n}` and the metadata statement_id, attempt, workspace and period.
  The outcome is recorded after the call.
- What happens to a STARTED attempt depends on where its request got to (`delivery`):
  - `not_sent`: the connection to Stripe was never made (refused, DNS failure, connect timeout),
    so nothing can have been charged. The call is tried again at once (RESEND_PAUSES), and any
    later run (a re-run of the close, the every-minute job) sends it again at once with the same
    idempotency key.
  - `unknown`: the request may have reached Stripe and the answer was lost (a read timeout, a
    dropped connection, a 5xx). The next run reconciles it before anything else: its PaymentIntent
    is looked up by id, else among the customer's charges by its metadata; found, its outcome is
    recorded; not found, Stripe never made it, and it is sent again with the same key (which
    Stripe would answer with the original result had it arrived after all).
  - `sending` and still held: another process is calling Stripe for it; nobody else touches it.
    Held past `sending_until`: that process died, and it is reconciled as `unknown`.
  All of this runs under the statement's row lock, so no two processes settle or send the same
  attempt at once, and a run counts only the attempts it sent or settled itself.
- Within one run, after UNREACHABLE_AFTER requests in a row that never reached Stripe, Stripe is
  taken to be down: the run stops calling it and records the rest as `not_sent` (an outage costs
  seconds, not one connection timeout per statement), for the next run to send.
- The webhooks `payment_intent.succeeded` / `payment_intent.payment_failed` record outcomes
  through the same function as the charge path: whichever arrives first records, the other
  changes nothing.
- Paid statements are never charged again; a statement with nothing due (zero, or a total below
  the minimum charge carried to next month) is not charged at all.

Retry schedule (dunning)
A failed charge makes the statement `payment_failed` and e-mails the workspace's owners and
admins. It is retried automatically 1, 3 and 7 days after its first failure
(RETRY_AFTER_FIRST_FAILURE, run by the every-minute task billing.tasks.payments_retry_due). If the
retry on day 7 fails as well, the statement stays `payment_failed` with no next retry (4 attempts
in all). Adding a card (`payment_method_set`) retries every `payment_failed` statement of the
workspace at once, whatever the schedule says. A workspace with no card fails the same way,
without calling Stripe, and the e-mail asks for a card.

Every run over statements returns a ChargeReport that says what happened to each one, truthfully:
paid, declined, no card, not sent (Stripe unreachable), pending reconciliation, in progress in
another run, waiting for its retry, already paid, carried forward, nothing due.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import stripe
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from core.money import usd_cents
from workspaces.models import Workspace

from .models import PaymentAttempt, Statement, StatementAudit, StripeCustomer
from .payment_intents import LOST_ANSWER_NOTE, RESEND_PAUSES, intent_of_attempt, payment_intent_create
from .payment_outcomes import ACTOR, CHARGEABLE, NO_CARD, Outcome, outcome_of_intent, settle
from .payment_report import Charge, ChargeReport, State
from .stripe_api import (
    CONNECT_TIMEOUT,
    failure_reason,
    never_sent,
    payments_configured,
    stripe_client,
    stripe_timeout,
)

logger = logging.getLogger(__name__)

# Requests in a row that never reached Stripe after which a run takes Stripe to be down.
UNREACHABLE_AFTER = 3
NOT_SENT_NOTE = "Not sent: Stripe could not be reached ({reason}). Sent again, with the same key, once it answers."
DOWN_NOTE = "connection refused or timed out on the last {n} requests of this run; not tried"


def send_lease() -> timedelta:
    """How long the process charging an attempt holds it: longer than its tries can last (each
    refused try at most CONNECT_TIMEOUT, the last one a full request), plus a margin. Past it, the
    process is taken to have died and the attempt is reconciled. 77 s with the defaults."""
    longest = len(RESEND_PAUSES) * CONNECT_TIMEOUT + sum(RESEND_PAUSES) + CONNECT_TIMEOUT + stripe_timeout()
    return timedelta(seconds=longest + 15)


@dataclass
class _Reachability:
    """Within one run: after UNREACHABLE_AFTER requests in a row that never reached Stripe, Stripe
    is down for the rest of the run and no more requests are made."""

    refused: int = 0

    @property
    def down(self) -> bool:
        return self.refused >= UNREACHABLE_AFTER

    def saw(self, delivery: str) -> None:
        self.refused = self.refused + 1 if delivery == PaymentAttempt.Delivery.NOT_SENT else 0


# --- Charging ----------------------------------------------------------------------------------


def statement_charge(statement: Statement, *, now: datetime | None = None, retry_now: bool = False) -> Charge:
    """Charge what the statement owes, at most once, and say what happened (Charge.state).
    `retry_now` charges a failed statement before its next retry time (a card was just added).

    A STARTED attempt is sent again, reconciled or left to the run holding it, instead of making a
    new one (see the module docstring). Call it outside a transaction: the STARTED attempt must be
    committed before Stripe is called.
    """
    return _charge(statement.pk, now=now or timezone.now(), retry_now=retry_now)


def _charge(statement_id: int, *, now: datetime, retry_now: bool = False, reach: _Reachability | None = None) -> Charge:
    stripe_client()  # raises PaymentsNotConfigured before any attempt is saved
    reach = reach if reach is not None else _Reachability()
    begun = _charge_begin(statement_id, now=now, retry_now=retry_now, reach=reach)
    if isinstance(begun, Charge):
        return begun
    attempt, actor = begun
    outcome = payment_intent_create(attempt)
    reach.saw(outcome.delivery)
    return _record(attempt.pk, outcome, now=now, actor=actor)


def _state_of(statement: Statement) -> str:
    """The State of a statement that is not charged now."""
    if statement.status == Statement.Status.PAID:
        return State.ALREADY_PAID
    if statement.status == Statement.Status.PAYMENT_FAILED and statement.amount_due_cents > 0:
        return State.WAITING_RETRY
    if statement.carried_forward > 0:
        return State.CARRIED_FORWARD
    return State.NOTHING_DUE


def _state_of_attempt(attempt: PaymentAttempt) -> str:
    if attempt.status == PaymentAttempt.Status.SUCCEEDED:
        return State.PAID
    if attempt.status == PaymentAttempt.Status.FAILED:
        return State.NO_CARD if attempt.failure_code == PaymentAttempt.FailureCode.NO_CARD else State.DECLINED
    return State.NOT_SENT if attempt.delivery == PaymentAttempt.Delivery.NOT_SENT else State.PENDING


def _charge_begin(
    statement_id: int, *, now: datetime, retry_now: bool, reach: _Reachability
) -> Charge | tuple[PaymentAttempt, str]:
    """Under the statement's lock, decide: an attempt to send now (with the audit actor), or what
    was done instead (a Charge). Committed on return, so the attempt is held (`sending`) before
    Stripe is asked to charge."""
    wall = timezone.now()  # leases run on the real clock, whatever `now` the caller bills at
    with transaction.atomic():
        statement = Statement.objects.select_for_update().get(pk=statement_id)
        if statement.status not in CHARGEABLE or statement.amount_due_cents <= 0:
            return Charge(_state_of(statement))
        customer = StripeCustomer.objects.filter(workspace_id=statement.workspace_id).first()
        pending = statement.payment_attempts.filter(status=PaymentAttempt.Status.STARTED).order_by("number").first()
        if pending is not None:
            return _resume(statement, pending, customer, now=now, wall=wall, reach=reach)
        due = statement.next_retry_at is not None and statement.next_retry_at <= now
        if statement.status == Statement.Status.PAYMENT_FAILED and not (due or retry_now):
            return Charge(State.WAITING_RETRY)
        number = (statement.payment_attempts.aggregate(n=Max("number"))["n"] or 0) + 1
        attempt = PaymentAttempt.objects.create(
            statement=statement,
            number=number,
            amount_cents=statement.amount_due_cents,
            idempotency_key=f"statement:{statement.pk}:attempt:{number}",
            sending_until=wall + send_lease(),
        )
        if customer is None or not customer.default_payment_method:
            settle(statement, attempt, Outcome(PaymentAttempt.Status.FAILED, error=NO_CARD, code=PaymentAttempt.FailureCode.NO_CARD), now=now)
            return Charge(State.NO_CARD, attempt)
        if reach.down:
            _not_sent(statement, attempt, DOWN_NOTE.format(n=reach.refused))
            return Charge(State.NOT_SENT, attempt)
        return attempt, ACTOR


def _resume(
    statement: Statement, attempt: PaymentAttempt, customer: StripeCustomer | None, *, now: datetime,
    wall: datetime, reach: _Reachability,
) -> Charge | tuple[PaymentAttempt, str]:  # fmt: skip
    """A STARTED attempt, under its statement's lock: leave it to the run holding it, send it again
    (never reached Stripe, or Stripe has no trace of it), or record what Stripe says of it."""
    if attempt.delivery == PaymentAttempt.Delivery.SENDING and attempt.sending_until and attempt.sending_until > wall:
        return Charge(State.IN_PROGRESS, attempt)
    if reach.down:
        return Charge(_state_of_attempt(attempt), attempt)
    if attempt.delivery == PaymentAttempt.Delivery.NOT_SENT:
        _hold(attempt, wall)
        return attempt, "stripe (sent again)"
    # The answer was lost, or the process sending it died: what does Stripe know?
    if customer is None:
        return Charge(State.PENDING, attempt)
    try:
        intent = intent_of_attempt(stripe_client(), attempt, customer)
    except stripe.StripeError as exc:
        logger.warning("Reconciling statement %s attempt %s: %r", statement.pk, attempt.number, exc)
        reach.saw(PaymentAttempt.Delivery.NOT_SENT if never_sent(exc) else PaymentAttempt.Delivery.UNKNOWN)
        _unsettled(attempt, PaymentAttempt.Delivery.UNKNOWN, LOST_ANSWER_NOTE.format(reason=failure_reason(exc)))
        return Charge(State.PENDING, attempt)
    reach.saw(PaymentAttempt.Delivery.ANSWERED)
    if intent is None:
        logger.warning("Statement %s attempt %s never reached Stripe; sending it again with its key", statement.pk, attempt.number)
        _hold(attempt, wall)
        return attempt, "stripe (sent again)"
    outcome = outcome_of_intent(intent)
    settle(statement, attempt, outcome, now=now, actor="stripe (reconciled)")
    if outcome.status == PaymentAttempt.Status.STARTED:
        _unsettled(attempt, PaymentAttempt.Delivery.ANSWERED, "Stripe is still processing this payment.")
    return Charge(_state_of_attempt(attempt), attempt)


def _hold(attempt: PaymentAttempt, wall: datetime) -> None:
    attempt.delivery, attempt.sending_until = PaymentAttempt.Delivery.SENDING, wall + send_lease()
    attempt.save(update_fields=["delivery", "sending_until"])


def _unsettled(attempt: PaymentAttempt, delivery: str, error: str) -> None:
    """Record why a STARTED attempt is not settled, and release it for the next run."""
    attempt.delivery, attempt.sending_until, attempt.error = delivery, None, error
    attempt.save(update_fields=["delivery", "sending_until", "error"])


def _not_sent(statement: Statement, attempt: PaymentAttempt, reason: str) -> None:
    """The attempt never reached Stripe: say so on the attempt, and once in the history."""
    first_time = attempt.delivery != PaymentAttempt.Delivery.NOT_SENT and not attempt.error
    _unsettled(attempt, PaymentAttempt.Delivery.NOT_SENT, NOT_SENT_NOTE.format(reason=reason))
    if first_time:
        StatementAudit.objects.create(
            statement=statement, actor=ACTOR, action="payment_not_sent",
            note=f"attempt {attempt.number}: {usd_cents(attempt.amount_cents)} not sent, Stripe unreachable ({reason}); "
                 "sent again automatically once it answers",
        )  # fmt: skip


# --- Recording outcomes ------------------------------------------------------------------------


def _record(attempt_id: int, outcome: Outcome, *, now: datetime, actor: str = ACTOR) -> Charge:
    """Record the outcome of the call this run made. The run reports the attempt's final state,
    also when a webhook recorded the same outcome first (it is still this run's charge)."""
    with transaction.atomic():
        statement_id = PaymentAttempt.objects.values_list("statement_id", flat=True).get(pk=attempt_id)
        statement = Statement.objects.select_for_update().get(pk=statement_id)
        attempt = PaymentAttempt.objects.get(pk=attempt_id)
        if attempt.status == PaymentAttempt.Status.STARTED:
            if outcome.delivery == PaymentAttempt.Delivery.NOT_SENT:
                _not_sent(statement, attempt, outcome.error)
            elif outcome.status == PaymentAttempt.Status.STARTED:
                if outcome.payment_intent_id and not attempt.payment_intent_id:
                    attempt.payment_intent_id = outcome.payment_intent_id
                    attempt.save(update_fields=["payment_intent_id"])
                error = outcome.error or "Stripe is still processing this payment."
                _unsettled(attempt, outcome.delivery, error)
        if outcome.status != PaymentAttempt.Status.STARTED:
            settle(statement, attempt, outcome, now=now, actor=actor)
    return Charge(_state_of_attempt(attempt), attempt)


# --- Runs over many statements -----------------------------------------------------------------


def _charge_all(statement_ids, *, now: datetime, report: ChargeReport, retry_now: bool = False) -> ChargeReport:
    reach = _Reachability()
    for statement_id in statement_ids:
        report.add(_charge(statement_id, now=now, retry_now=retry_now, reach=reach).state)
    return report


def statements_charge_due(period: date, only: Workspace | None = None, *, now: datetime | None = None) -> ChargeReport:
    """Charge every finalized or payment_failed statement of `period` or an earlier month (of
    `only`, when given), each once: a close that caught up on earlier months charges them too.
    Re-running charges nothing more: paid ones are done, failed ones wait for their retry time, an
    attempt that never reached Stripe is sent again, and one whose answer was lost is reconciled."""
    now = now or timezone.now()
    statements = Statement.objects.filter(period__lte=period).exclude(status=Statement.Status.VOID)
    if only is not None:
        statements = statements.filter(workspace=only)
    report = ChargeReport()
    due = Q(status__in=CHARGEABLE, amount_due_cents__gt=0)
    ids = list(statements.filter(due).order_by("pk").values_list("pk", flat=True))
    # The rest, counted by the database (every month up to `period`: not loaded one by one).
    paid, carried = Q(status=Statement.Status.PAID), Q(carried_forward__gt=0)
    rest = statements.exclude(due).aggregate(
        n_paid=Count("pk", filter=paid), n_carried=Count("pk", filter=~paid & carried),
        n_nothing=Count("pk", filter=~paid & ~carried),
    )  # fmt: skip
    for state, n in ((State.ALREADY_PAID, rest["n_paid"]), (State.CARRIED_FORWARD, rest["n_carried"]),
                     (State.NOTHING_DUE, rest["n_nothing"])):  # fmt: skip
        if n:
            report.counts[state] += n
    if not payments_configured():
        logger.warning("STRIPE_SECRET_KEY is not set: %s statements up to %s not charged", len(ids), period)
        report.counts[State.NOT_CONFIGURED] += len(ids)
        return report
    return _charge_all(ids, now=now, report=report)


def payments_retry_due(*, now: datetime | None = None) -> ChargeReport:
    """The every-minute job: send again attempts that never reached Stripe, reconcile those whose
    answer was lost (or whose process died), and retry declined statements whose time has come."""
    now = now or timezone.now()
    report = ChargeReport()
    if not payments_configured():
        return report
    wall = timezone.now()
    due = Statement.objects.filter(
        status=Statement.Status.PAYMENT_FAILED, next_retry_at__lte=now, amount_due_cents__gt=0
    ).values_list("pk", flat=True)
    unsettled = (
        PaymentAttempt.objects.filter(status=PaymentAttempt.Status.STARTED, statement__status__in=CHARGEABLE)
        .exclude(delivery=PaymentAttempt.Delivery.SENDING, sending_until__gt=wall)
        .values_list("statement_id", flat=True)
    )
    return _charge_all(sorted(set(due) | set(unsettled)), now=now, report=report)


def payments_retry_workspace(workspace_id: int, *, now: datetime | None = None) -> ChargeReport:
    """Charge the workspace's payment_failed statements now (a card was just added)."""
    now = now or timezone.now()
    ids = Statement.objects.filter(
        workspace_id=workspace_id, status=Statement.Status.PAYMENT_FAILED, amount_due_cents__gt=0
    ).order_by("period").values_list("pk", flat=True)
    return _charge_all(list(ids), now=now, report=ChargeReport(), retry_now=True)
