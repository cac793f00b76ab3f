"""Stripe unreachable during the month-end close (issue 10, finding 5), with real faults on the
wire: a TCP proxy in front of a real localstripe (tests/faults.py) that refuses connections or
drops answers, and the localstripe process itself killed and restarted.

What must hold: a charge that provably never reached Stripe is sent again, with the same
idempotency key, by the very next run (a re-run of the close, or the every-minute job), not 15
minutes later; a charge whose answer was lost is reconciled with Stripe before anything is sent
(localstripe honours no idempotency keys, so a blind resend would show as a second PaymentIntent);
every run reports each statement's state truthfully; two closes running at once count each
payment once between them."""

from __future__ import annotations

import re
import threading
import time
from datetime import date, datetime, timezone
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from billing import cards, payments, tasks
from billing.close import statement_close
from billing.models import PaymentAttempt, Statement, StatementAudit, StripeCustomer
from tests.conftest import event
from tests.faults import TcpProxy
from usage.services import events_ingest
from workspaces.services import api_key_create, workspace_create

OCT = date(2026, 10, 1)
RECEIVED = datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc)
CLOSED = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
RECOVERED_WITHIN = 10  # seconds from Stripe answering again to every held-back charge settled

pytestmark = pytest.mark.django_db


@pytest.fixture
def stripe_proxy(local_stripe, settings):
    """The app talks to localstripe through a proxy the test can break."""
    proxy = TcpProxy(local_stripe.port).start()
    settings.STRIPE_API_BASE = proxy.url
    yield proxy
    proxy.stop()


def workspace_with(slug: str, images: int, card: str | None) -> tuple:
    """A workspace with `images` SD 1.5 images in October ($0.004 each, $0.50 free) and `card`."""
    workspace = workspace_create(slug=slug, owner_email=f"owner@{slug}.test", name=slug.title())
    key = api_key_create(workspace=workspace, name="generator").api_key
    outcome = events_ingest(
        workspace=workspace, api_key=key, now=RECEIVED,
        raw_events=[event(occurred_at="2026-10-05T10:00:00Z", quantity=images, event_id=f"{slug}-1")],
    )  # fmt: skip
    assert outcome.results[0].status == "accepted"
    if card:
        cards.payment_method_set(workspace, card)
    return workspace


def month_of_statements(cards: dict[str, str | None], images: int = 500) -> dict[str, Statement]:
    statements = {}
    for slug, card in cards.items():
        statements[slug], _ = statement_close(workspace_with(slug, images, card), OCT, now=CLOSED)
    return statements


def close(*args: str) -> str:
    out = StringIO()
    call_command("close_period", "2026-10", *args, stdout=out)
    return out.getvalue()


def charges_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("Charges:"))


def intents_of(local_stripe, statement: Statement) -> list[dict]:
    return [i for i in local_stripe.payment_intents() if i["metadata"].get("statement_id") == str(statement.pk)]


def test_a_close_during_an_outage_says_what_it_did_and_a_re_run_charges_at_once_with_the_same_keys(
    stripe_proxy, local_stripe
):
    cards = {f"paying{n}": "pm_card_visa" for n in range(4)} | {"declining": "pm_card_chargeCustomerFail", "cardless": None}
    statements = month_of_statements(cards)
    carried = month_of_statements({"small": "pm_card_visa"}, images=200)["small"]  # $0.30: below the minimum
    assert carried.amount_due_cents == 0 and carried.carried_forward > 0

    stripe_proxy.refuse()
    started = time.monotonic()
    output = close()
    elapsed = time.monotonic() - started
    assert charges_line(output) == (
        "Charges: 0 paid, 0 declined, 1 failed for want of a card, 5 not sent (Stripe unreachable), "
        "1 carried forward (below the minimum charge). Stripe could not be reached: the charges not sent are "
        "sent again, with the same idempotency keys, by the next run (billing.tasks.payments_retry_due, every "
        "minute) once it answers."
    )
    # Three refused requests in a row and the run stops calling Stripe: seconds, not a timeout each.
    assert elapsed < 5 * payments.UNREACHABLE_AFTER, elapsed
    held = PaymentAttempt.objects.filter(status="started").order_by("pk")
    assert [(a.number, a.delivery, a.sending_until) for a in held] == [(1, "not_sent", None)] * 5
    assert all(a.error.startswith("Not sent: Stripe could not be reached (connection refused") for a in held[:3])
    assert all("not tried" in a.error for a in held[3:])
    assert StatementAudit.objects.filter(action="payment_not_sent").count() == 5
    assert local_stripe.payment_intents() == []

    stripe_proxy.forward()
    back = time.monotonic()
    output = close()
    assert time.monotonic() - back < RECOVERED_WITHIN
    assert charges_line(output) == (
        "Charges: 4 paid, 1 declined, 1 waiting for their next retry, 1 carried forward (below the minimum charge)."
    )
    for slug, statement in statements.items():
        statement.refresh_from_db()
        expected = {"cardless": "payment_failed", "declining": "payment_failed"}.get(slug, "paid")
        assert statement.status == expected, slug
        if slug == "cardless":
            continue
        # The attempt that could not be sent, sent again: attempt 1, its key, one PaymentIntent.
        [intent] = intents_of(local_stripe, statement)
        [attempt] = statement.payment_attempts.all()
        assert intent["metadata"]["attempt"] == "1" and attempt.payment_intent_id == intent["id"]
        assert attempt.idempotency_key == f"statement:{statement.pk}:attempt:1" and attempt.delivery == "answered"
        assert StatementAudit.objects.filter(statement=statement, actor="stripe (sent again)").count() == 1

    # And again: nothing more is charged.
    assert charges_line(close()) == (
        "Charges: 0 paid, 0 declined, 2 waiting for their next retry, 4 already paid, "
        "1 carried forward (below the minimum charge)."
    )
    assert len(local_stripe.payment_intents()) == 5


def test_the_every_minute_job_sends_what_an_outage_held_back(stripe_proxy, local_stripe):
    from config.schedule import CELERY_BEAT_SCHEDULE

    statements = month_of_statements({"a": "pm_card_visa", "b": "pm_card_visa"})
    stripe_proxy.refuse()
    assert payments.statements_charge_due(OCT).as_dict() == {"paid": 0, "declined": 0, "not_sent": 2}
    # Still down: the job tries, says so, and keeps the attempts for the next minute.
    assert tasks.payments_retry_due.apply().get() == {"paid": 0, "declined": 0, "not_sent": 2}

    stripe_proxy.forward()
    assert tasks.payments_retry_due.apply().get() == {"paid": 1 + 1, "declined": 0}
    assert {s.pk: Statement.objects.get(pk=s.pk).status for s in statements.values()} == {
        s.pk: "paid" for s in statements.values()
    }
    assert len(local_stripe.payment_intents()) == 2
    entry = CELERY_BEAT_SCHEDULE["billing-payments-retry-due"]
    assert entry["task"] == "billing.tasks.payments_retry_due"
    assert entry["schedule"].minute == set(range(60)) and entry["schedule"].hour == set(range(24))


def test_a_lost_answer_is_reconciled_with_stripe_never_sent_blindly(stripe_proxy, local_stripe):
    [statement] = month_of_statements({"acme": "pm_card_visa"}).values()
    stripe_proxy.lose_answers()
    report = payments.statements_charge_due(OCT)
    assert report.as_dict() == {"paid": 0, "declined": 0, "pending": 1}
    assert "reconciled with Stripe by the next run, never sent blindly" in report.summary()
    assert stripe_proxy.lost == 1
    attempt = PaymentAttempt.objects.get()
    assert (attempt.status, attempt.delivery, attempt.payment_intent_id) == ("started", "unknown", None)
    assert attempt.error.startswith("Sent, but Stripe's answer was lost")
    [intent] = intents_of(local_stripe, statement)  # Stripe did charge
    assert intent["status"] == "succeeded"

    # Still losing answers: the next run cannot learn the outcome, and sends nothing.
    assert payments.payments_retry_due().as_dict() == {"paid": 0, "declined": 0, "pending": 1}
    assert len(local_stripe.payment_intents()) == 1

    stripe_proxy.forward()
    assert payments.payments_retry_due().as_dict() == {"paid": 1, "declined": 0}
    attempt.refresh_from_db()
    assert (attempt.status, attempt.payment_intent_id) == ("succeeded", intent["id"])
    assert [i["id"] for i in local_stripe.payment_intents()] == [intent["id"]]
    assert StatementAudit.objects.filter(statement=statement, actor="stripe (reconciled)", action="payment_succeeded").exists()


@pytest.mark.slow
def test_stripe_killed_before_the_close_and_restarted_after_it(local_stripe):
    """The real server process dies (connections refused on its port), then comes back on the
    same port with what it held."""
    statements = month_of_statements({"a": "pm_card_visa", "b": "pm_card_visa", "c": "pm_card_chargeCustomerFail"})
    local_stripe.kill()
    try:
        output = close()
        assert charges_line(output).startswith("Charges: 0 paid, 0 declined, 3 not sent (Stripe unreachable).")
    finally:
        local_stripe.restart()
    back = time.monotonic()
    assert charges_line(close()) == "Charges: 2 paid, 1 declined."
    assert time.monotonic() - back < RECOVERED_WITHIN
    assert sorted(Statement.objects.get(pk=s.pk).status for s in statements.values()) == ["paid", "paid", "payment_failed"]
    assert sorted(i["metadata"]["attempt"] for i in local_stripe.payment_intents()) == ["1", "1", "1"]


@pytest.mark.django_db(transaction=True)
def test_two_closes_at_once_count_each_payment_once_between_them(local_stripe, settings):
    proxy = TcpProxy(local_stripe.port).start()
    settings.STRIPE_API_BASE = proxy.url
    try:
        statements = month_of_statements({f"w{n:02d}": "pm_card_visa" for n in range(12)})
        proxy.latency = 0.15  # each Stripe call takes a while: the two runs overlap on every statement
        barrier = threading.Barrier(2)
        outputs: list[str] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                barrier.wait(timeout=10)
                outputs.append(close())
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        paid = [int(re.search(r"Charges: (\d+) paid", charges_line(o)).group(1)) for o in outputs]
        assert sum(paid) == 12, outputs
        for output in outputs:  # the other run's charges are named as such, never as paid
            line = charges_line(output)
            others = re.search(r"(\d+) (already paid|being charged by another run)", line)
            assert int(re.search(r"(\d+) paid", line).group(1)) + sum(
                int(n) for n, _ in re.findall(r"(\d+) (already paid|being charged by another run)", line)
            ) == 12, line
            assert others or "12 paid" in line
        assert len(local_stripe.payment_intents()) == 12
        assert all(Statement.objects.get(pk=s.pk).status == "paid" for s in statements.values())
        assert PaymentAttempt.objects.count() == 12
    finally:
        proxy.stop()


def test_adding_a_card_while_stripe_is_unreachable_answers_503_and_changes_nothing(stripe_proxy, workspace):
    from tests.billing.test_payments import owner_session

    stripe_proxy.refuse()
    api = owner_session(workspace)
    for path, body in (("/api/v1/billing/setup-intent", None), ("/api/v1/billing/payment-method", {"payment_method": "pm_card_visa"})):
        response = api.post(path, body, format="json")
        assert response.status_code == 503, (path, response.content)
        assert response.json() == {"detail": "The payment processor cannot be reached (connection refused); try again in a minute."}
    assert not StripeCustomer.objects.filter(workspace=workspace).exists()
