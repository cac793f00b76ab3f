"""Charging statements through Stripe (a real localstripe server): customers, cards, charges,
declines and retries, crashes between the call and its outcome, and the month-end close."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.mail.backends import locmem
from django.core.management import call_command
from django.db import connection
from django.utils import timezone as dj_timezone
from rest_framework.test import APIClient

from billing import cards, emails, payments, tasks
from billing.close import statement_close
from billing.models import PaymentAttempt, Statement, StatementAudit, StripeCustomer
from billing.payment_outcomes import NO_CARD
from billing.payment_report import Charge
from core.periods import current_period, previous_month
from tests.billing import crashes
from tests.conftest import client_with, event
from tests.conftest import ingest as ingest_at
from workspaces.models import Membership
from workspaces.services import api_key_create

pytestmark = pytest.mark.usefixtures("local_stripe")

ROOT = Path(__file__).resolve().parents[2]
OCT = date(2026, 10, 1)
RECEIVED = datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc)
CLOSED = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
SDXL = dict(model="sdxl", steps=50, width=1024, height=1824)  # $0.169 each


def ingest(workspace, api_key, events, *, at: datetime = RECEIVED) -> None:
    """Events received at `at` (by default the 1st of November, after October ended)."""
    ingest_at(workspace, api_key, events, now=at)


@pytest.fixture
def statement(workspace, api_key) -> Statement:
    """October: 500 sd15 images ($2.00) + 20 sdxl ($3.38) − $0.50 free tier = $4.88 due."""
    ingest(workspace, api_key, [
        event(occurred_at="2026-10-03T10:00:00Z", quantity=500),
        event(occurred_at="2026-10-20T10:00:00Z", quantity=20, **SDXL),
    ])
    found, created = statement_close(workspace, OCT, now=CLOSED)
    assert created and found.status == Statement.Status.FINALIZED
    assert found.amount_due_cents == 488
    return found


def member(workspace, email: str, role: str):
    user = get_user_model().objects.create(username=email, email=email)
    Membership.objects.create(workspace=workspace, user=user, role=role)
    return user


def session_of(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def owner_session(workspace) -> APIClient:
    return session_of(Membership.objects.get(workspace=workspace, role=Membership.Role.OWNER).user)


def customer_of(workspace) -> StripeCustomer:
    return StripeCustomer.objects.get(workspace=workspace)


def intents(local_stripe, workspace) -> list[dict]:
    return local_stripe.payment_intents(customer=customer_of(workspace).customer_id)


# --- Customers and cards -----------------------------------------------------------------------


def test_one_customer_per_workspace_with_its_metadata(workspace, local_stripe):
    first = cards.customer_ensure(workspace)
    again = cards.customer_ensure(workspace)
    assert first.pk == again.pk and StripeCustomer.objects.count() == 1
    customers = local_stripe.get("/v1/customers").json()["data"]
    assert [c["id"] for c in customers] == [first.customer_id]
    assert customers[0]["metadata"] == {"workspace_id": str(workspace.pk), "workspace_slug": "acme"}
    assert customers[0]["email"] == "owner@acme.test"


def test_the_setup_intent_endpoint_makes_one_for_the_workspace_customer(workspace, local_stripe):
    response = owner_session(workspace).post("/api/v1/billing/setup-intent", format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"client_secret", "setup_intent"}
    assert body["client_secret"].startswith(body["setup_intent"] + "_secret_")
    held = local_stripe.get(f"/v1/setup_intents/{body['setup_intent']}").json()
    assert held["customer"] == customer_of(workspace).customer_id
    assert held["usage"] == "off_session"


def test_the_payment_method_endpoint_attaches_the_card_and_makes_it_the_default(workspace, local_stripe):
    response = owner_session(workspace).post("/api/v1/billing/payment-method", {"payment_method": "pm_card_visa"}, format="json")
    assert response.status_code == 200, response.content
    customer = customer_of(workspace)
    card = response.json()["payment_method"]
    # Stripe turns the test id into a new payment method; the real id is what is kept.
    assert card.startswith("pm_") and card != "pm_card_visa"
    assert response.json() == {"payment_method": card, "customer": customer.customer_id}
    assert customer.default_payment_method == card
    held = local_stripe.get(f"/v1/customers/{customer.customer_id}").json()
    assert held["invoice_settings"]["default_payment_method"] == card
    assert local_stripe.get(f"/v1/payment_methods/{card}").json()["customer"] == customer.customer_id


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "This field is required."),
        ({"payment_method": ""}, "This field may not be blank."),
        ({"payment_method": "4242424242424242"}, "A payment method id looks like 'pm_…'."),
        ({"payment_method": "pm_doesnotexist"}, "No such payment method: 'pm_doesnotexist'."),
    ],
)
def test_a_missing_or_unknown_payment_method_is_a_400_on_the_field(workspace, local_stripe, body, message):
    response = owner_session(workspace).post("/api/v1/billing/payment-method", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == {"payment_method": [message]}
    assert not StripeCustomer.objects.filter(workspace=workspace).exclude(default_payment_method="").exists()


@pytest.mark.parametrize("path, body", [
    ("/api/v1/billing/setup-intent", None),
    ("/api/v1/billing/payment-method", {"payment_method": "pm_card_visa"}),
])
def test_viewers_and_keys_without_billing_write_get_403(workspace, local_stripe, path, body):
    viewer = session_of(member(workspace, "viewer@acme.test", Membership.Role.VIEWER))
    response = viewer.post(path, body, format="json")
    assert response.status_code == 403
    assert "owners and admins" in response.json()["detail"]
    narrow = client_with(api_key_create(workspace=workspace, name="usage only", scopes=["usage:write", "usage:read"]).secret)
    response = narrow.post(path, body, format="json")
    assert response.status_code == 403
    assert "billing:write" in response.json()["detail"]
    assert not StripeCustomer.objects.exists()
    assert local_stripe.get("/v1/customers").json()["data"] == []
    # The same call is allowed to an admin, and to a key with the scope.
    admin = session_of(member(workspace, "admin@acme.test", Membership.Role.ADMIN))
    assert admin.post(path, body, format="json").status_code in (200, 201)
    billing_key = client_with(api_key_create(workspace=workspace, name="billing", scopes=["billing:write"]).secret)
    assert billing_key.post(path, body, format="json").status_code in (200, 201)


# --- Charging ----------------------------------------------------------------------------------


def test_a_finalized_statement_is_charged_its_amount_due_once(workspace, statement, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    report = payments.statements_charge_due(OCT, now=CLOSED)
    assert report.as_dict() == {"paid": 1, "declined": 0}
    assert report.summary() == "Charges: 1 paid, 0 declined."

    [intent] = intents(local_stripe, workspace)
    assert intent["amount"] == statement.amount_due_cents == 488
    assert intent["currency"] == "usd" and intent["status"] == "succeeded"
    assert intent["payment_method"] == customer_of(workspace).default_payment_method
    assert intent["metadata"] == {
        "statement_id": str(statement.pk), "attempt": "1", "workspace": "acme", "period": "2026-10",
    }
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID and statement.paid_at == CLOSED
    attempt = PaymentAttempt.objects.get()
    assert (attempt.number, attempt.status, attempt.payment_intent_id) == (1, "succeeded", intent["id"])
    assert attempt.idempotency_key == f"statement:{statement.pk}:attempt:1"
    assert StatementAudit.objects.filter(statement=statement, action="payment_succeeded").count() == 1

    # Re-running charges nothing more, and a paid statement is never charged again.
    again = payments.statements_charge_due(OCT, now=CLOSED + timedelta(days=1))
    assert again.as_dict() == {"paid": 0, "declined": 0, "already_paid": 1}
    assert payments.statement_charge(statement) == Charge("already_paid")
    assert len(intents(local_stripe, workspace)) == 1
    assert PaymentAttempt.objects.count() == 1


def test_a_declined_card_fails_mails_owners_and_admins_and_a_new_card_pays(
    workspace, statement, local_stripe, django_capture_on_commit_callbacks, celery_eager
):
    member(workspace, "admin@acme.test", Membership.Role.ADMIN)
    member(workspace, "viewer@acme.test", Membership.Role.VIEWER)
    cards.payment_method_set(workspace, "pm_card_chargeCustomerFail")
    mail.outbox.clear()  # the statement's "ready" e-mail (tests/billing/test_invoices.py)
    with django_capture_on_commit_callbacks(execute=True):
        report = payments.statements_charge_due(OCT, now=CLOSED)
    assert report.as_dict() == {"paid": 0, "declined": 1}

    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAYMENT_FAILED
    assert statement.next_retry_at == CLOSED + timedelta(days=1)
    [declined] = intents(local_stripe, workspace)
    attempt = PaymentAttempt.objects.get()
    assert attempt.status == "failed" and attempt.payment_intent_id == declined["id"]
    assert "declined" in attempt.error
    assert StatementAudit.objects.filter(statement=statement, action="payment_failed").count() == 1

    assert sorted(m.to[0] for m in mail.outbox) == ["admin@acme.test", "owner@acme.test"]
    message = mail.outbox[0]
    assert message.subject == "Payment failed: Meterboard October 2026 for Acme ($4.88)"
    assert "$4.88" in message.body and "October 2026" in message.body
    assert "Your card was declined." in message.body
    assert "http://127.0.0.1:8000/?workspace=acme" in message.body
    assert "we try again on 3 November 2026, 02:00 UTC" in message.body
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html" and 'href="http://127.0.0.1:8000/?workspace=acme"' in html

    # Re-running the charge before the retry time charges nothing more.
    again = payments.statements_charge_due(OCT, now=CLOSED + timedelta(hours=1))
    assert again.as_dict() == {"paid": 0, "declined": 0, "waiting_retry": 1}
    assert len(intents(local_stripe, workspace)) == 1

    # A new card: the failed statement is retried at once (a task enqueued on commit).
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_session(workspace).post(
            "/api/v1/billing/payment-method", {"payment_method": "pm_card_visa"}, format="json"
        )
    assert response.status_code == 200, response.content
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID and statement.next_retry_at is None
    found = intents(local_stripe, workspace)
    assert len(found) == 2
    paid = next(i for i in found if i["status"] == "succeeded")
    assert paid["amount"] == 488 and paid["metadata"]["attempt"] == "2"
    assert paid["payment_method"] == response.json()["payment_method"]
    assert list(PaymentAttempt.objects.values_list("number", "status")) == [(1, "failed"), (2, "succeeded")]
    # No second failure e-mail; a receipt to each owner and admin.
    receipts = sorted(m.to[0] for m in mail.outbox[2:])
    assert len(mail.outbox) == 4 and receipts == ["admin@acme.test", "owner@acme.test"]
    assert all(m.subject.startswith("Receipt: $4.88 paid for invoice MB-") for m in mail.outbox[2:])


def test_retries_follow_the_schedule_and_then_stop(
    workspace, statement, local_stripe, django_capture_on_commit_callbacks, celery_eager
):
    cards.payment_method_set(workspace, "pm_card_chargeCustomerFail")
    with django_capture_on_commit_callbacks(execute=True):
        payments.statements_charge_due(OCT, now=CLOSED)
    expected = [CLOSED + timedelta(days=1), CLOSED + timedelta(days=3), CLOSED + timedelta(days=7), None]
    statement.refresh_from_db()
    assert statement.next_retry_at == expected[0]
    for number, due in enumerate(expected[:3], start=2):
        early = payments.payments_retry_due(now=due - timedelta(minutes=1))
        assert early.as_dict() == {"paid": 0, "declined": 0}
        assert PaymentAttempt.objects.count() == number - 1
        with django_capture_on_commit_callbacks(execute=True):
            report = payments.payments_retry_due(now=due + timedelta(minutes=30))
        assert report.as_dict() == {"paid": 0, "declined": 1}
        statement.refresh_from_db()
        assert statement.status == Statement.Status.PAYMENT_FAILED
        assert statement.next_retry_at == expected[number - 1]
    assert PaymentAttempt.objects.filter(status="failed").count() == 4
    assert len(intents(local_stripe, workspace)) == 4
    assert len(mail.outbox) == 4  # one owner, one e-mail per failure
    assert "no more automatic retries" in mail.outbox[-1].body
    later = payments.payments_retry_due(now=CLOSED + timedelta(days=60))
    assert later.as_dict() == {"paid": 0, "declined": 0}
    assert len(intents(local_stripe, workspace)) == 4


@pytest.mark.parametrize("with_customer", [False, True])
def test_no_card_fails_without_calling_stripe_and_asks_for_one(
    workspace, statement, local_stripe, django_capture_on_commit_callbacks, celery_eager, with_customer
):
    if with_customer:
        cards.customer_ensure(workspace)
    with django_capture_on_commit_callbacks(execute=True):
        charge = payments.statement_charge(statement, now=CLOSED)
    attempt = charge.attempt
    assert charge.state == "no_card" and attempt.status == "failed" and attempt.error == NO_CARD
    assert attempt.payment_intent_id is None
    assert local_stripe.payment_intents() == []
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAYMENT_FAILED
    assert statement.next_retry_at == CLOSED + timedelta(days=1)
    [message] = mail.outbox
    assert message.to == ["owner@acme.test"]
    assert message.subject == "Add a card: Meterboard October 2026 for Acme ($4.88)"
    assert "add a card on the dashboard" in message.body


class FlakyMailServer(locmem.EmailBackend):
    """Drops the connection `failures` times, then delivers (to mail.outbox)."""

    failures = 0

    def send_messages(self, messages):
        if FlakyMailServer.failures:
            FlakyMailServer.failures -= 1
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return super().send_messages(messages)


def test_the_failure_email_is_sent_by_a_task_retried_while_the_mail_server_fails(
    workspace, statement, local_stripe, django_capture_on_commit_callbacks, celery_eager, settings, monkeypatch
):
    settings.EMAIL_BACKEND = f"{__name__}.FlakyMailServer"
    monkeypatch.setattr(FlakyMailServer, "failures", 2)
    celery_eager.conf.task_eager_propagates = False  # eager Celery runs a retry at once unless it propagates
    with django_capture_on_commit_callbacks(execute=True):
        charge = payments.statement_charge(statement, now=CLOSED)
    assert charge.state == "no_card" and FlakyMailServer.failures == 0
    [message] = mail.outbox  # sent once, by the third try
    assert message.to == ["owner@acme.test"] and message.subject.startswith("Add a card")


def test_no_failure_email_once_the_statement_is_paid(workspace, statement, local_stripe, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        charge = payments.statement_charge(statement, now=CLOSED)
    Statement.objects.filter(pk=statement.pk).update(status=Statement.Status.PAID)  # a card was added meanwhile
    assert emails.payment_failed_email_send(statement.pk, charge.attempt.pk, "owner@acme.test") is False
    assert callbacks and not mail.outbox


def test_nothing_due_is_not_charged(workspace, api_key, local_stripe):
    ingest(workspace, api_key, [event(occurred_at="2026-10-03T10:00:00Z", quantity=10)])  # $0.04, under the free tier
    small, _ = statement_close(workspace, OCT, now=CLOSED)
    assert small.amount_due_cents == 0
    cards.payment_method_set(workspace, "pm_card_visa")
    assert payments.statement_charge(small, now=CLOSED) == Charge("nothing_due")
    report = payments.statements_charge_due(OCT, now=CLOSED)
    assert report.as_dict() == {"paid": 0, "declined": 0, "nothing_due": 1}
    assert report.summary() == "Charges: 0 paid, 0 declined, 1 with nothing due."
    assert local_stripe.payment_intents() == [] and not PaymentAttempt.objects.exists()


def test_without_a_stripe_key_nothing_is_charged(workspace, statement, settings):
    settings.STRIPE_SECRET_KEY = ""
    report = payments.statements_charge_due(OCT, now=CLOSED)
    assert report.as_dict() == {"paid": 0, "declined": 0, "not_configured": 1}
    assert "set STRIPE_SECRET_KEY" in report.summary()
    assert not PaymentAttempt.objects.exists()
    statement.refresh_from_db()
    assert statement.status == Statement.Status.FINALIZED


def test_two_concurrent_charges_of_one_statement_make_one_payment_intent(transactional_db, workspace, statement, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def charge() -> None:
        try:
            barrier.wait(timeout=10)
            payments.statement_charge(Statement.objects.get(pk=statement.pk), now=CLOSED)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=charge) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    payments.statements_charge_due(OCT, now=CLOSED)  # settles the attempt if the loser saw it in flight
    assert len(intents(local_stripe, workspace)) == 1
    assert list(PaymentAttempt.objects.values_list("number", "status")) == [(1, "succeeded")]
    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID


# --- A crash between the Stripe call and its outcome ------------------------------------------


@pytest.mark.parametrize("card, outcome, status", [
    ("pm_card_visa", "succeeded", Statement.Status.PAID),
    ("pm_card_chargeCustomerFail", "failed", Statement.Status.PAYMENT_FAILED),
])
def test_a_re_run_after_a_crash_reconciles_instead_of_charging_again(workspace, statement, local_stripe, card, outcome, status):
    cards.payment_method_set(workspace, card)
    attempt = crashes.after_the_stripe_call(statement, CLOSED)
    [intent] = intents(local_stripe, workspace)
    attempt.refresh_from_db()
    assert attempt.status == "started" and attempt.payment_intent_id is None

    # While its lease runs, the attempt is another process's: nobody touches it, nobody counts it.
    report = payments.statements_charge_due(OCT, now=CLOSED)
    assert report.as_dict() == {"paid": 0, "declined": 0, "in_progress": 1}
    crashes.lease_expires(attempt)
    report = payments.statements_charge_due(OCT, now=CLOSED)
    assert report.as_dict() == ({"paid": 1, "declined": 0} if outcome == "succeeded" else {"paid": 0, "declined": 1})
    attempt.refresh_from_db()
    assert (attempt.status, attempt.payment_intent_id) == (outcome, intent["id"])
    statement.refresh_from_db()
    assert statement.status == status
    assert StatementAudit.objects.filter(statement=statement, actor="stripe (reconciled)").count() == 1
    for _ in range(2):
        payments.statements_charge_due(OCT, now=CLOSED)
        payments.payments_retry_due(now=CLOSED + timedelta(hours=1))
    assert [i["id"] for i in intents(local_stripe, workspace)] == [intent["id"]]
    assert PaymentAttempt.objects.count() == 1


def test_an_attempt_whose_process_died_before_calling_stripe_is_sent_again_with_its_key_once_its_lease_ends(
    workspace, statement, local_stripe
):
    cards.payment_method_set(workspace, "pm_card_visa")
    attempt = crashes.begin(statement, CLOSED)  # ...and the process dies before calling Stripe.
    assert timedelta(seconds=60) < attempt.sending_until - dj_timezone.now() <= payments.send_lease()

    # Held: perhaps its process is still sending it, so nothing is sent, by the close or the job.
    assert payments.statements_charge_due(OCT, now=CLOSED).as_dict() == {"paid": 0, "declined": 0, "in_progress": 1}
    assert payments.payments_retry_due(now=CLOSED).as_dict() == {"paid": 0, "declined": 0}
    assert intents(local_stripe, workspace) == []

    crashes.lease_expires(attempt)
    report = payments.payments_retry_due(now=CLOSED + timedelta(minutes=2))
    assert report.as_dict() == {"paid": 1, "declined": 0}
    [intent] = intents(local_stripe, workspace)
    assert intent["metadata"]["attempt"] == "1" and intent["amount"] == 488
    assert list(PaymentAttempt.objects.values_list("number", "status", "payment_intent_id")) == [(1, "succeeded", intent["id"])]
    assert StatementAudit.objects.filter(statement=statement, actor="stripe (sent again)", action="payment_succeeded").exists()


# --- The month-end close -----------------------------------------------------------------------


def test_close_period_finalizes_and_charges_the_total_to_the_cent(workspace, api_key, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    ingest(workspace, api_key, [
        event(occurred_at="2026-10-01T00:00:00Z", quantity=333),
        event(occurred_at="2026-10-15T10:00:00Z", quantity=7, composition_control=True, **SDXL),
        event(occurred_at="2026-10-31T23:59:59Z", feature="upscaling", quantity=3, model=..., steps=..., width=..., height=...),
    ])
    out = StringIO()
    call_command("close_period", "2026-10", stdout=out)
    assert "1 statements finalized" in out.getvalue() and "Charges: 1 paid, 0 declined" in out.getvalue()

    statement = Statement.objects.get(workspace=workspace, period=OCT)
    cents = int((statement.total * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert cents == statement.amount_due_cents > 0
    assert sum(line.amount for line in statement.lines.all()) == statement.total
    [intent] = intents(local_stripe, workspace)
    assert intent["amount"] == cents and intent["status"] == "succeeded"
    assert statement.status == Statement.Status.PAID

    out = StringIO()
    call_command("close_period", "2026-10", stdout=out)
    assert "Charges: 0 paid, 0 declined, 1 already paid." in out.getvalue()
    assert len(intents(local_stripe, workspace)) == 1


def test_the_monthly_task_closes_and_charges_the_previous_month(workspace, api_key, local_stripe):
    period = previous_month(current_period(dj_timezone.now()))
    first_of_this_month = datetime(period.year, period.month, 1, tzinfo=timezone.utc) + timedelta(days=32)
    received = first_of_this_month.replace(day=1, hour=0, minute=30)
    ingest(workspace, api_key, [event(occurred_at=f"{period:%Y-%m}-10T12:00:00Z", quantity=400)], at=received)
    cards.payment_method_set(workspace, "pm_card_visa")

    result = tasks.period_close_and_charge_previous_month.apply().get()
    assert result == {"period": f"{period:%Y-%m}", "finalized": 1, "caught_up": {}, "already_closed": 0,
                      "charges": {"paid": 1, "declined": 0}}
    [intent] = intents(local_stripe, workspace)
    assert intent["amount"] == 110  # 400 × $0.004 − $0.50
    again = tasks.period_close_and_charge_previous_month.apply().get()
    assert (again["finalized"], again["already_closed"], again["charges"]) == (0, 1, {"paid": 0, "declined": 0, "already_paid": 1})
    assert len(intents(local_stripe, workspace)) == 1


def schedule_with(**env) -> subprocess.CompletedProcess:
    code = (
        "import json; from config.schedule import CELERY_BEAT_SCHEDULE as s; "
        "c = s['billing-close-previous-month']['schedule']; "
        "print(json.dumps([sorted(c.day_of_month), sorted(c.hour), sorted(c.minute), "
        "s['billing-close-previous-month']['task'], s['billing-payments-retry-due']['task']]))"
    )
    base = {k: v for k, v in os.environ.items() if k != "BILLING_CLOSE_DAY"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True)


@pytest.mark.parametrize("env, day", [({}, 2), ({"BILLING_CLOSE_DAY": "5"}, 5)])
def test_the_close_runs_on_billing_close_day_at_2_utc(env, day):
    import json

    result = schedule_with(**env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        [day], [2], [0], "billing.tasks.period_close_and_charge_previous_month", "billing.tasks.payments_retry_due",
    ]


def test_a_close_day_not_in_every_month_is_refused():
    result = schedule_with(BILLING_CLOSE_DAY="31")
    assert result.returncode != 0 and "from 1 to 28" in result.stderr
