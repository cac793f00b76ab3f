"""Test mode in a real browser (issue 14, part 4): the banner, the test cards, and a newcomer's walk
through a declined card on the payment page, against localstripe's Stripe.js stand-in: a card whose
charges fail leaves the unpaid statement at payment failed, a working card retries it and pays it."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone

import pytest

from billing.close import statement_close
from billing.models import PaymentAttempt, Statement, StripeCustomer
from billing.payments import statement_charge
from dashboard.selectors.statements import scheduled_close
from tests.billing.conftest import celery_eager  # noqa: F401  (a card saved retries failed statements: a task)
from tests.conftest import event
from tests.dashboard.conftest import last_month_day, sign_in
from usage.services import events_ingest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def add_card(page, number: str) -> None:
    """Type a card into localstripe's stand-in for the card Element and save it."""
    page.wait_for_selector("#card-element input")
    page.fill("#card-element input[placeholder=number]", number)
    page.fill("#card-element input[placeholder=exp_month]", "12")
    page.fill("#card-element input[placeholder=exp_year]", "34")
    page.fill("#card-element input[placeholder=cvc]", "123")
    page.fill("#card-element input[placeholder=postal_code]", "75001")
    page.get_by_role("button", name="Save card").click()


@pytest.fixture
def unpaid_statement(workspace, api_key):
    """The month before last, closed on schedule with $5.00 of training, charged with no card on
    file: payment failed."""
    period = (last_month_day().date().replace(day=1) - timedelta(days=1)).replace(day=1)
    occurred = datetime.combine(period.replace(day=15), time(12, 0), tzinfo=dt_timezone.utc)
    outcome = events_ingest(workspace=workspace, api_key=api_key, now=occurred + timedelta(minutes=1), raw_events=[
        event(occurred_at=occurred.isoformat(), feature="training", model=..., steps=..., width=..., height=...),
    ])  # fmt: skip
    assert outcome.results[0].status == "accepted"
    statement, _ = statement_close(workspace, period, now=scheduled_close(period))
    statement_charge(statement)
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAYMENT_FAILED and statement.amount_due_cents > 0
    return statement


def test_a_declined_card_leaves_the_statement_failed_and_a_working_one_pays_it(
    page, owner, workspace, local_stripe, celery_eager, unpaid_statement  # noqa: F811
):
    statement = unpaid_statement
    sign_in(page, "owner@acme.test")
    banner = page.locator("#test-mode-banner")
    assert "Test mode — payments go to a local Stripe simulator, no money moves." in banner.inner_text()
    banner.get_by_role("link", name="Test cards").click()
    page.wait_for_url(re.compile(r"/payment/"))
    cards = page.locator("#test-cards")
    assert cards.is_visible()
    assert "4000000000000341" in cards.inner_text() and "4242424242424242" in cards.inner_text()
    assert f"{statement.period:%B %Y}" in page.locator(".notice.bad").inner_text()

    # A card that is declined when saved: an error on the page, nothing on file.
    add_card(page, "4000000000000002")
    page.wait_for_function("() => document.getElementById('card-errors').textContent.length > 0")
    assert "declined" in page.locator("#card-errors").inner_text()
    # Chrome reports the simulator's 402 answer as a console error; that one only.
    assert all("402" in error for error in page.console_errors), page.console_errors
    page.console_errors.clear()
    assert not StripeCustomer.objects.filter(workspace=workspace).exclude(default_payment_method="").exists()

    # A card saved fine, whose charges fail: the retry on saving it is declined.
    page.reload()
    add_card(page, "4000000000000341")
    page.wait_for_url(re.compile(r"saved=1"))
    assert "0341" in page.locator("#current-card").inner_text()
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAYMENT_FAILED
    attempts = list(statement.payment_attempts.order_by("number"))
    assert [(a.status, a.failure_code) for a in attempts] == [
        (PaymentAttempt.Status.FAILED, PaymentAttempt.FailureCode.NO_CARD),
        (PaymentAttempt.Status.FAILED, PaymentAttempt.FailureCode.DECLINED),
    ]
    assert f"{statement.period:%B %Y}" in page.locator(".notice.bad").inner_text(), "still unpaid"

    # A working card: retried at once, and paid.
    add_card(page, "4242424242424242")
    page.wait_for_url(re.compile(r"saved=1"))
    page.wait_for_function("() => document.getElementById('current-card').textContent.includes('4242')")
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID
    assert statement.payment_attempts.order_by("-number").first().status == PaymentAttempt.Status.SUCCEEDED
    assert page.locator(".notice.bad").count() == 0
    # Stripe's side: one failed and one succeeded PaymentIntent for the statement, of its amount.
    customer = StripeCustomer.objects.get(workspace=workspace)
    intents = sorted(local_stripe.payment_intents(customer=customer.customer_id), key=lambda i: i["metadata"]["attempt"])
    assert [(i["metadata"]["statement_id"], i["amount"]) for i in intents] == [(str(statement.pk), statement.amount_due_cents)] * 2
    assert intents[0]["status"] != "succeeded" and intents[1]["status"] == "succeeded"
    # The statement page tells the story.
    page.goto(f"{page.base_url}/statements/{statement.pk}/?workspace=acme")
    assert page.locator("#statement-status").inner_text() == "Paid"
    assert page.locator("#test-mode-banner").is_visible()
