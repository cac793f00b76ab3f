"""A demo that pays (issue 14, part 4): against the local Stripe simulator, `seed_demo` gives the
demo workspace a customer and a card in localstripe and charges its past statements through the
real payment path, the first one after a declined card; against anything else it charges nothing."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import PaymentAttempt, Statement, StripeCustomer
from demo.accounts import DEMO_SLUG

HISTORY = ("--scale", "0.05")  # the default three months, at a twentieth of the volume


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *HISTORY, *args, stdout=out)
    return out.getvalue()


def closed_statements() -> list[Statement]:
    return list(
        Statement.objects.filter(workspace__slug=DEMO_SLUG)
        .exclude(status=Statement.Status.VOID)
        .order_by("period")
        .prefetch_related("payment_attempts")
    )


def intents_by_statement(local_stripe, customer_id: str) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for intent in local_stripe.payment_intents(customer=customer_id):
        found.setdefault(int(intent["metadata"]["statement_id"]), []).append(intent)
    return found


def test_past_statements_are_charged_in_the_simulator_after_a_declined_first_card(db, local_stripe):
    out = seed()

    statements = closed_statements()
    assert statements, "the demo has at least one closed month"
    due = [s for s in statements if s.amount_due_cents > 0]
    assert due and all(s.status == Statement.Status.PAID for s in due), [(s.period, s.status) for s in statements]
    customer = StripeCustomer.objects.get(workspace__slug=DEMO_SLUG)
    # Stripe's side: each statement paid by one succeeded PaymentIntent of its amount; the first one
    # also by a PaymentIntent that the declining card failed.
    intents = intents_by_statement(local_stripe, customer.customer_id)
    assert set(intents) == {s.pk for s in due}
    first, *later = due
    declined, paid = sorted(intents[first.pk], key=lambda i: int(i["metadata"]["attempt"]))
    assert declined["status"] != "succeeded" and paid["status"] == "succeeded"
    assert paid["amount"] == first.amount_due_cents and paid["currency"] == "usd"
    attempts = list(first.payment_attempts.order_by("number"))
    assert [(a.status, a.failure_code) for a in attempts] == [
        (PaymentAttempt.Status.FAILED, PaymentAttempt.FailureCode.DECLINED),
        (PaymentAttempt.Status.SUCCEEDED, ""),
    ]
    assert first.paid_at > first.finalized_at  # the card was replaced after the failure, then retried
    for statement in later:
        [intent] = intents[statement.pk]
        assert (intent["status"], intent["amount"]) == ("succeeded", statement.amount_due_cents)
        assert statement.payment_attempts.count() == 1
        assert statement.paid_at == statement.finalized_at  # charged at its close
    # The card left on file is the working one, in Stripe and here.
    stripe_customer = local_stripe.get(f"/v1/customers/{customer.customer_id}").json()
    assert stripe_customer["invoice_settings"]["default_payment_method"] == customer.default_payment_method
    card = local_stripe.get(f"/v1/payment_methods/{customer.default_payment_method}").json()["card"]
    assert card["last4"] == "4242"
    assert f"{first.period:%Y-%m}  ${first.total:>10,.2f}  paid on {first.paid_at:%Y-%m-%d %H:%M} UTC, at attempt 2" in out
    assert "local Stripe simulator" in out


def test_a_second_run_charges_nothing_more(db, local_stripe):
    seed()
    customer = StripeCustomer.objects.get(workspace__slug=DEMO_SLUG)
    before = local_stripe.payment_intents(customer=customer.customer_id)
    statements = [(s.pk, s.status, s.paid_at) for s in closed_statements()]

    out = seed()

    assert local_stripe.payment_intents(customer=customer.customer_id) == before
    assert [(s.pk, s.status, s.paid_at) for s in closed_statements()] == statements
    assert StripeCustomer.objects.get(workspace__slug=DEMO_SLUG) == customer
    assert StripeCustomer.objects.get(pk=customer.pk).default_payment_method == customer.default_payment_method
    assert PaymentAttempt.objects.filter(statement__workspace__slug=DEMO_SLUG).count() == sum(
        s.payment_attempts.count() for s in closed_statements()
    )
    assert "paid on" in out and "no longer knows" not in out


def test_a_simulator_that_lost_its_store_gets_a_new_customer_and_card(db, local_stripe):
    seed()
    lost = StripeCustomer.objects.get(workspace__slug=DEMO_SLUG).customer_id
    paid = [(s.pk, s.paid_at) for s in closed_statements()]
    local_stripe.reset()  # var/localstripe.pickle deleted, the database kept

    out = seed()

    customer = StripeCustomer.objects.get(workspace__slug=DEMO_SLUG)
    assert customer.customer_id != lost and "no longer knows the demo's customer" in out
    assert local_stripe.get(f"/v1/customers/{customer.customer_id}").status_code == 200
    assert local_stripe.get(f"/v1/payment_methods/{customer.default_payment_method}").json()["card"]["last4"] == "4242"
    assert [(s.pk, s.paid_at) for s in closed_statements()] == paid, "paid statements are never charged again"
    assert local_stripe.payment_intents(customer=customer.customer_id) == []


@pytest.mark.parametrize(
    ("key", "api_base", "why"),
    [
        ("", "https://api.stripe.com", "no STRIPE_SECRET_KEY"),
        ("sk_test_abc", "https://api.stripe.com", "is the real one (test key)"),
        ("sk_live_abc", "http://127.0.0.1:8420", "is the real one (live key)"),
    ],
)
def test_nothing_is_charged_unless_against_the_simulator(db, settings, key, api_base, why):
    """No network here: Stripe itself is never called, so the real Stripe base cannot answer."""
    settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE = key, api_base

    out = seed()

    assert why in out
    assert not StripeCustomer.objects.exists()
    assert not PaymentAttempt.objects.exists()
    assert {s.status for s in closed_statements()} <= {Statement.Status.FINALIZED}
