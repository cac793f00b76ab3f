"""Each workspace's Stripe Customer and its card: created on first use, a SetupIntent for the
browser to collect a card, the card made the default (which retries failed statements at once),
and the card's brand and last digits for the payment page."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import stripe
from django.db import IntegrityError, transaction

from core.errors import ServiceError
from core.jobs import enqueue
from workspaces.models import Membership, Workspace

from .auto_recharge import auto_recharge_card_added
from .models import Statement, StripeCustomer
from .stripe_api import PaymentsUnavailable, failure_reason, payments_configured, stripe_client

logger = logging.getLogger(__name__)


class PaymentMethodRejected(ServiceError):
    """Stripe would not take this payment method (no such id, declined, another customer's)."""

    field = "payment_method"


@contextlib.contextmanager
def _stripe_errors_translated() -> Iterator[None]:
    """Stripe's other errors (unreachable, 5xx, rate limited) as PaymentsUnavailable."""
    try:
        yield
    except stripe.StripeError as exc:
        raise PaymentsUnavailable(
            f"The payment processor cannot be reached ({failure_reason(exc)}); try again in a minute."
        ) from exc


def customer_ensure(workspace: Workspace) -> StripeCustomer:
    """The workspace's Stripe Customer, created on first use. One per workspace, also when two
    requests race: the unique constraint decides, and the loser's customer is deleted.
    Raises PaymentsUnavailable when Stripe cannot be reached."""
    with _stripe_errors_translated():
        return _customer_ensure(workspace)


def _customer_ensure(workspace: Workspace) -> StripeCustomer:
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
    """A SetupIntent for the browser to collect a card for off-session charges. Raises
    PaymentsUnavailable when Stripe cannot be reached."""
    customer = customer_ensure(workspace)
    with _stripe_errors_translated():
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

    Raises PaymentMethodRejected when Stripe refuses the payment method, PaymentsUnavailable
    when it cannot be reached."""
    customer = customer_ensure(workspace)
    client = stripe_client()
    with _stripe_errors_translated():
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
        auto_recharge_card_added(workspace.pk)  # a recharge declined before may go on
        if Statement.objects.filter(workspace=workspace, status=Statement.Status.PAYMENT_FAILED).exists():
            transaction.on_commit(functools.partial(enqueue, "billing.tasks.payments_retry_workspace", workspace.pk))
    return customer


@dataclass(frozen=True)
class Card:
    payment_method: str
    brand: str = ""
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None


def payment_card(workspace: Workspace) -> Card | None:
    """The workspace's default card: its id from our records, its brand and last digits from
    Stripe (left out when Stripe cannot be reached: the page still shows that a card is on file)."""
    customer = StripeCustomer.objects.filter(workspace=workspace).first()
    if customer is None or not customer.default_payment_method:
        return None
    card = Card(customer.default_payment_method)
    if not payments_configured():
        return card
    try:
        method = stripe_client().v1.payment_methods.retrieve(customer.default_payment_method).to_dict()
    except stripe.StripeError as exc:
        logger.warning("Could not read payment method of %s from Stripe: %r", workspace.slug, exc)
        return card
    details = method.get("card") or {}
    return Card(
        customer.default_payment_method,
        brand=str(details.get("brand") or ""),
        last4=str(details.get("last4") or ""),
        exp_month=details.get("exp_month"),
        exp_year=details.get("exp_year"),
    )
