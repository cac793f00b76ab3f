"""The demo's payments, when `make run` points the app at its local Stripe simulator (localstripe):
a Stripe customer with a card, and each past statement charged at its close through the real
payment path (billing.cards, billing.payments), so that the statements page shows them paid.

The first statement the demo charges tells the story of a declined card: the studio's first card
(Stripe's test card that is saved but declined on every charge) fails it, the statement goes to
payment failed, and the owner replaces the card a day later, which retries it at once and pays it
(as `payment_method_set` always does). Every later month is charged to that working card.

Only the simulator: never a live key, nor a test key against Stripe itself (the demo's customers
would land in someone's Stripe account). Safe to re-run: a statement is charged at most once
(billing.payments), and the card is set only when the workspace has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import stripe
from django.conf import settings

from billing.cards import customer_ensure, payment_method_set
from billing.models import Statement, StripeCustomer
from billing.payment_report import Charge, State
from billing.payments import payments_retry_workspace, statement_charge
from billing.stripe_api import StripeMode, stripe_client, stripe_mode
from workspaces.models import Workspace

# Stripe's test payment methods (localstripe knows them): one saved fine but declined on every
# charge, one that pays.
DECLINING_CARD = "pm_card_chargeCustomerFail"
WORKING_CARD = "pm_card_visa"
CARD_REPLACED_AFTER = timedelta(days=1)  # the owner, e-mailed about the failure, adds a card the next day


def demo_payments_enabled() -> bool:
    """Payments are seeded against the local simulator only (billing.stripe_api.stripe_mode)."""
    return stripe_mode() == StripeMode.SIMULATOR


def demo_payments_skipped_reason() -> str:
    """Why the demo's statements are not charged, for the seed's output."""
    mode = stripe_mode()
    if mode == StripeMode.OFF:
        return "no STRIPE_SECRET_KEY (`make run` starts a local Stripe simulator when none is set)"
    return (
        f"Stripe at {settings.STRIPE_API_BASE} is the real one ({mode.value} key): the demo charges only "
        "a local simulator"
    )


@dataclass(frozen=True)
class CustomerCheck:
    customer_id: str
    recreated: bool  # the simulator had lost it (its store was deleted): a new one was made


def demo_customer_ensure(workspace: Workspace) -> CustomerCheck:
    """The workspace's Stripe customer, made when missing, and made again when the simulator no
    longer knows the one on record (var/localstripe.pickle deleted while the database was kept):
    otherwise every charge would be refused."""
    recreated = False
    known = StripeCustomer.objects.filter(workspace=workspace).first()
    if known is not None:
        try:
            stripe_client().v1.customers.retrieve(known.customer_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
            known.delete()
            recreated = True
    return CustomerCheck(customer_ensure(workspace).customer_id, recreated)


def _has_card(workspace: Workspace) -> bool:
    return StripeCustomer.objects.filter(workspace=workspace).exclude(default_payment_method="").exists()


def demo_statement_charge(statement: Statement, *, at: datetime, now: datetime) -> Charge:
    """Charge a closed demo statement at its close (`at`), as the month-end job does. When the
    workspace has no card yet and this statement has something to charge, the declined-card story
    first (module docstring); the retry happens at most `now`."""
    workspace = statement.workspace
    owes = statement.status in (Statement.Status.FINALIZED, Statement.Status.PAYMENT_FAILED)
    if owes and statement.amount_due_cents > 0 and not _has_card(workspace):
        payment_method_set(workspace, DECLINING_CARD)
        declined = statement_charge(statement, now=at)
        if declined.state != State.DECLINED:
            return declined
        payment_method_set(workspace, WORKING_CARD)
        payments_retry_workspace(workspace.pk, now=min(at + CARD_REPLACED_AFTER, now))
        statement.refresh_from_db()
        return Charge(State.PAID if statement.status == Statement.Status.PAID else State.DECLINED)
    return statement_charge(statement, now=at)


def demo_card_ensure(workspace: Workspace) -> None:
    """A working card on file, also when no statement needed one (the payment page shows it)."""
    if not _has_card(workspace):
        payment_method_set(workspace, WORKING_CARD)
