"""Auto-recharge end to end: events posted to the HTTP API, the budgets' evaluation a real Celery
worker runs after the ingestion, the recharge task it enqueues, and the PaymentIntent in a real
localstripe; the owner's e-mail written by the worker."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from billing import cards
from billing.auto_recharge import auto_recharge_set
from billing.credits import credit_balance, credits_grant
from billing.models import CreditPurchase
from tests.budgets.conftest import spend_events, wait_until
from tests.conftest import client_with, post_events
from workspaces.services import api_key_create, workspace_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def stripe_worker(request, localstripe_server):
    """The budgets' real worker, charging through the suite's localstripe."""
    from tests.stripe_server import SECRET_KEY

    saved = {name: os.environ.get(name) for name in ("STRIPE_API_BASE", "STRIPE_SECRET_KEY")}
    os.environ.update(STRIPE_API_BASE=localstripe_server.url, STRIPE_SECRET_KEY=SECRET_KEY)
    try:
        yield request.getfixturevalue("worker")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_ingestion_below_the_threshold_recharges_once_through_the_worker(stripe_worker, local_stripe):
    stripe_worker.forget_mails()
    workspace = workspace_create(slug="acme", owner_email="owner@acme.test", name="Acme")
    api = client_with(api_key_create(workspace=workspace, name="generator").secret)
    cards.payment_method_set(workspace, "pm_card_visa")
    credits_grant(workspace, Decimal(8), actor="staff")
    auto_recharge_set(workspace, enabled=True, threshold=Decimal(5), amount=Decimal(20), max_per_day=3)
    post_events(api, spend_events(0, cents=200))  # live balance 6.00: above the threshold
    post_events(api, spend_events(0, cents=200))  # 4.00: the crossing
    post_events(api, spend_events(0, cents=100))  # 3.00: the same crossing
    purchase = wait_until(
        lambda: CreditPurchase.objects.filter(workspace=workspace, status="succeeded").first(), seconds=60, what="a recharge"
    )
    assert purchase.crossing == 1 and purchase.amount_cents == 2000
    assert credit_balance(workspace.pk) == Decimal(28)
    customer = workspace.stripe_customer.customer_id
    assert len(local_stripe.payment_intents(customer=customer)) == 1
    subjects = wait_until(lambda: [s for s in stripe_worker.subjects() if "recharged" in s], what="the recharge e-mail")
    assert subjects == ["[Meterboard] Credits recharged: 20.00 USD"]
