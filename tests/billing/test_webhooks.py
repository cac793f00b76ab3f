"""POST /stripe/webhook/: signature checked, each event stored once, payment outcomes recorded
with the same rules as the charge path. The live test has localstripe deliver real signed events
to a running server."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone

import pytest
import requests
from django.core import mail
from django.test import Client

from billing import cards, payments
from billing.close import statement_close
from billing.models import PaymentAttempt, Statement, StatementAudit, StripeWebhookEvent
from tests.billing import crashes
from tests.conftest import event
from tests.stripe_server import event_body, sign
from usage.services import events_ingest

OCT = date(2026, 10, 1)
CLOSED = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
SECRET = "whsec_test_meterboard"
URL = "/stripe/webhook/"


@pytest.fixture
def statement(workspace, api_key) -> Statement:
    outcome = events_ingest(
        workspace=workspace, api_key=api_key, raw_events=[event(occurred_at="2026-10-03T10:00:00Z", quantity=500)],
        now=datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc),
    )
    assert outcome.results[0].status == "accepted"
    found, _ = statement_close(workspace, OCT, now=CLOSED)
    assert found.amount_due_cents == 150
    return found


@pytest.fixture
def secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    return SECRET


def post(body: bytes, signature: str | None) -> tuple[int, dict]:
    headers = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    response = Client().post(URL, body, content_type="application/json", **headers)
    return response.status_code, response.json()


def intent_of(local_stripe, statement) -> dict:
    [intent] = [i for i in local_stripe.payment_intents() if i["metadata"].get("statement_id") == str(statement.pk)]
    return intent


# --- Signatures --------------------------------------------------------------------------------


def forged_cases(body: bytes):
    return {
        "no signature": None,
        "garbage": "nonsense",
        "another secret": sign(body, "whsec_someone_else"),
        "too old": sign(body, SECRET, timestamp=int(time.time()) - 3600),
        "dated ahead": sign(body, SECRET, timestamp=int(time.time()) + 3600),
        "other body": sign(body.replace(b"succeeded", b"succeedex"), SECRET),
    }


@pytest.mark.parametrize("case", ["no signature", "garbage", "another secret", "too old", "dated ahead", "other body"])
def test_a_forged_or_stale_event_is_400_and_changes_nothing(workspace, statement, secret, case):
    intent = {"id": "pi_forged", "object": "payment_intent", "status": "succeeded", "amount": 150,
              "metadata": {"statement_id": str(statement.pk), "attempt": "1"}}
    PaymentAttempt.objects.create(statement=statement, number=1, amount_cents=150, idempotency_key="statement:x:attempt:1")
    body = event_body("payment_intent.succeeded", intent)
    status, answer = post(body, forged_cases(body)[case])
    assert status == 400 and "Stripe-Signature" in answer["detail"]
    assert not StripeWebhookEvent.objects.exists()
    statement.refresh_from_db()
    assert statement.status == Statement.Status.FINALIZED
    assert PaymentAttempt.objects.get().status == "started"


def test_without_a_webhook_secret_every_event_is_refused(db, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    body = event_body("payment_intent.succeeded", {"id": "pi_1"})
    status, answer = post(body, sign(body, ""))
    assert status == 400 and "STRIPE_WEBHOOK_SECRET" in answer["detail"]
    assert not StripeWebhookEvent.objects.exists()


def test_a_signed_body_that_is_not_an_event_is_400(db, secret):
    for body in (b"[1, 2]", b'{"object": "event"}'):
        status, _ = post(body, sign(body, SECRET))
        assert status == 400
    assert not StripeWebhookEvent.objects.exists()


def test_get_is_not_allowed(db, secret):
    assert Client().get(URL).status_code == 405


# --- Handling (signed here, as Stripe signs) ---------------------------------------------------


def test_a_failed_payment_event_settles_a_started_attempt_and_mails_once(
    workspace, statement, secret, local_stripe, django_capture_on_commit_callbacks, celery_eager
):
    cards.payment_method_set(workspace, "pm_card_chargeCustomerFail")
    attempt = crashes.after_the_stripe_call(statement, CLOSED)
    intent = intent_of(local_stripe, statement)
    body = event_body("payment_intent.payment_failed", intent, event_id="evt_failed_1")
    with django_capture_on_commit_callbacks(execute=True):
        status, answer = post(body, sign(body, SECRET))
    assert (status, answer) == (200, {"id": "evt_failed_1", "status": "processed", "duplicate": False})
    attempt.refresh_from_db()
    assert (attempt.status, attempt.payment_intent_id) == ("failed", intent["id"])
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAYMENT_FAILED
    assert statement.next_retry_at == attempt.finished_at + timedelta(days=1)
    assert [m.to for m in mail.outbox] == [["owner@acme.test"]]

    # The charge path, run again, finds the outcome recorded: no new charge, no second e-mail.
    with django_capture_on_commit_callbacks(execute=True):
        payments.statements_charge_due(OCT, now=CLOSED)
    assert len(local_stripe.payment_intents()) == 1 and len(mail.outbox) == 1


def test_a_success_event_after_the_charge_path_recorded_it_changes_nothing(workspace, statement, secret, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    payments.statements_charge_due(OCT, now=CLOSED)
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID
    audit = StatementAudit.objects.count()
    body = event_body("payment_intent.succeeded", intent_of(local_stripe, statement))
    assert post(body, sign(body, SECRET))[1]["status"] == "processed"
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID and statement.paid_at == CLOSED
    assert StatementAudit.objects.count() == audit


def test_a_late_failure_event_does_not_unpay_a_paid_statement(workspace, statement, secret, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    payments.statements_charge_due(OCT, now=CLOSED)
    intent = {**intent_of(local_stripe, statement), "status": "requires_payment_method"}
    body = event_body("payment_intent.payment_failed", intent)
    assert post(body, sign(body, SECRET))[0] == 200
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID
    assert PaymentAttempt.objects.get().status == "succeeded"


@pytest.mark.parametrize("event_type, obj, error", [
    ("customer.created", {"id": "cus_1", "object": "customer"}, ""),
    ("payment_intent.succeeded", {"id": "pi_not_ours", "status": "succeeded", "metadata": {}},
     "No payment attempt of ours has this PaymentIntent."),
    ("payment_intent.succeeded", {"id": "pi_other", "status": "succeeded", "metadata": {"statement_id": "999999", "attempt": "1"}},
     "No payment attempt of ours has this PaymentIntent."),
])
def test_other_events_are_stored_as_ignored(db, secret, event_type, obj, error):
    body = event_body(event_type, obj, event_id="evt_other")
    status, answer = post(body, sign(body, SECRET))
    assert (status, answer["status"]) == (200, "ignored")
    row = StripeWebhookEvent.objects.get()
    assert (row.event_id, row.type, row.status, row.error) == ("evt_other", event_type, "ignored", error)
    assert row.payload == json.loads(body) and row.processed_at is not None


# --- Delivered by localstripe to a running server ----------------------------------------------


def wait_for(predicate, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not seen within {seconds}s")


@pytest.fixture
def delivered_to(local_stripe, live_server, secret):
    """localstripe POSTs its signed events to this test's live server."""
    url = f"http://127.0.0.1:{live_server.thread.port}{URL}"
    time.sleep(1.5)  # events of earlier tests, sent about 1 s after they happen, go nowhere
    local_stripe.webhook_register("meterboard", url, SECRET)
    yield url
    # Registrations outlive DELETE /_config/data: point this one nowhere for the next tests, and
    # let deliveries already on their way (sent about 1 s after each event) land first.
    local_stripe.webhook_register("meterboard", "http://127.0.0.1:9/", "unused")
    time.sleep(1.5)


def test_signed_events_from_stripe_are_stored_once_and_settle_the_statement(
    transactional_db, workspace, statement, local_stripe, delivered_to
):
    cards.payment_method_set(workspace, "pm_card_visa")
    attempt = crashes.after_the_stripe_call(statement, CLOSED)
    intent = intent_of(local_stripe, statement)

    succeeded = StripeWebhookEvent.objects.filter(type="payment_intent.succeeded", payload__data__object__id=intent["id"])
    row = wait_for(lambda: succeeded.filter(status="processed").first())
    assert succeeded.count() == 1
    attempt.refresh_from_db()
    assert (attempt.status, attempt.payment_intent_id) == ("succeeded", intent["id"])
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID
    assert StatementAudit.objects.filter(statement=statement, action="payment_succeeded", actor="stripe webhook").count() == 1
    # Events the app does not act on are kept, as ignored.
    wait_for(lambda: StripeWebhookEvent.objects.filter(type="customer.created", status="ignored").exists())

    # Stripe delivers the same event again: stored once, not handled again.
    body = json.dumps(row.payload).encode()
    response = requests.post(delivered_to, data=body, headers={
        "Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)}, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"id": row.event_id, "status": "processed", "duplicate": True}
    assert StripeWebhookEvent.objects.filter(event_id=row.event_id).count() == 1
    assert StripeWebhookEvent.objects.get(pk=row.pk).processed_at == row.processed_at
    assert StatementAudit.objects.filter(statement=statement, action="payment_succeeded").count() == 1

    # And the charge path agrees: nothing more to charge, still one PaymentIntent.
    report = payments.statements_charge_due(OCT, now=CLOSED)
    assert report.as_dict() == {"paid": 0, "declined": 0, "already_paid": 1}
    assert len(local_stripe.payment_intents()) == 1
