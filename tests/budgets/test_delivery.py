"""Delivering an alert, in this process: signed webhooks to a local receiver, e-mails, the retry
schedule, claims, refused addresses at delivery time, and every attempt logged. The sweep that
enqueues attempts from the database, and worker deaths: test_delivery_sweep.py."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.conf import settings
from django.core import mail

from budgets import webhooks
from budgets.delivery import RETRY_WINDOW, delivery_attempt, retry_delay
from budgets.evaluation import workspace_evaluate
from budgets.models import Alert, AlertDelivery, DeliveryAttempt
from budgets.services import budget_create
from tests.budgets.conftest import spend_events
from usage.services import events_ingest

NOW = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)


def crossing_alert(workspace, api_key, *, urls=(), email=True) -> tuple[Alert, list]:
    """A $10 budget with 100 % crossed; the alert and the endpoints (with their secrets)."""
    budget, issued = budget_create(workspace=workspace, amount=Decimal(10), thresholds=[100], forecast_alerts=False,
                                   email=email, webhook_urls=list(urls))
    events_ingest(workspace=workspace, api_key=api_key, raw_events=spend_events(10, occurred_at="2026-11-21T08:00:00Z"), now=NOW)
    [alert] = [a for a in workspace_evaluate(workspace.pk, now=NOW).recorded if a.budget_id == budget.pk]
    return alert, issued


def webhook_delivery(alert, url) -> AlertDelivery:
    return AlertDelivery.objects.get(alert=alert, channel="webhook", target=url)


def test_a_webhook_is_posted_once_signed_with_the_endpoint_secret(workspace, api_key, receiver, allow_private):
    alert, [endpoint] = crossing_alert(workspace, api_key, urls=[receiver.url("/hook")])
    delivery = webhook_delivery(alert, receiver.url("/hook"))
    assert delivery_attempt(delivery.pk, now=NOW).status == "delivered"
    assert delivery_attempt(delivery.pk, now=NOW).status == "skipped"  # delivered: never again
    [body] = receiver.verified("/hook", endpoint.secret)
    assert body == {
        "id": alert.pk, "type": "budget.threshold_reached", "created_at": "2026-11-21T12:00:00Z", "workspace": "acme",
        "period": "2026-11", "kind": "actual", "threshold": 100,
        "budget": {"id": alert.budget_id, "amount": "10.000000", "api_key": None, "hard_limit": False},
        "budget_amount": "10.000000", "spend": "10.000000", "forecast": "10.000000", "currency": "USD",
        "message": "Acme has spent 100% of its November 2026 budget",
        "dashboard_url": f"{settings.SITE_URL}/?workspace=acme",
    }
    [received] = receiver.on("/hook")
    assert received.headers["Meterboard-Delivery"] == str(delivery.pk)
    assert received.headers["Meterboard-Event"] == "budget.threshold_reached"
    assert received.headers["Content-Type"] == "application/json"
    # A wrong secret, a changed body or an old timestamp do not verify.
    header = received.headers["Meterboard-Signature"]
    assert not webhooks.signature_verify("whsec_wrong", header, received.body, now=received.at)
    assert not webhooks.signature_verify(endpoint.secret, header, received.body + b" ", now=received.at)
    assert not webhooks.signature_verify(endpoint.secret, header, received.body, now=received.at + 3600)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("delivered", 1, None)
    [attempt] = delivery.attempt_log.all()
    assert (attempt.outcome, attempt.http_status, attempt.number) == ("ok", 204, 1)
    assert attempt.duration_ms is not None


def test_the_signature_scheme_matches_its_documentation():
    body = b'{"id":1}'
    expected = "t=1700000000,v1=" + hmac.new(b"whsec_test", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.signature_header("whsec_test", 1700000000, body) == expected


def test_a_failing_webhook_is_retried_on_the_schedule_then_given_up(workspace, api_key, receiver, allow_private):
    alert, _ = crossing_alert(workspace, api_key, urls=[receiver.url("/fail")], email=False)
    delivery = webhook_delivery(alert, receiver.url("/fail"))
    clock = NOW
    waits = []
    while True:
        result = delivery_attempt(delivery.pk, now=clock)
        if result.status == "failed":
            break
        assert result.status == "retrying"
        assert delivery_attempt(delivery.pk, now=result.retry_at - timedelta(seconds=1)).status == "skipped"  # not due
        waits.append(result.retry_at - clock)
        clock = result.retry_at
    minutes = [w.total_seconds() / 60 for w in waits]
    assert minutes[:8] == [0.5, 1, 2, 4, 8, 16, 32, 45]
    assert set(minutes[7:]) == {45}
    assert clock <= delivery.created_at + RETRY_WINDOW < clock + timedelta(minutes=45)
    delivery.refresh_from_db()
    attempts = list(delivery.attempt_log.all())
    assert delivery.status == "failed" and delivery.attempts == len(attempts) == len(waits) + 1 == len(receiver.on("/fail"))
    assert {(a.outcome, a.http_status) for a in attempts} == {("http_error", 500)}
    assert delivery.last_error == "Answered HTTP 500 Internal Server Error"


def test_retry_delays_double_from_30_seconds_up_to_45_minutes():
    assert [retry_delay(n).total_seconds() for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 2700, 2700]


def test_a_webhook_that_does_not_answer_in_time_is_a_timeout(workspace, api_key, receiver, allow_private, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    alert, _ = crossing_alert(workspace, api_key, urls=[receiver.url("/slow")], email=False)
    delivery = webhook_delivery(alert, receiver.url("/slow"))
    started = time.monotonic()
    result = delivery_attempt(delivery.pk, now=NOW)
    assert time.monotonic() - started < 2
    assert result.status == "retrying" and result.retry_at == NOW + timedelta(seconds=30)
    [attempt] = DeliveryAttempt.objects.filter(delivery=delivery)
    assert (attempt.outcome, attempt.error, attempt.http_status) == ("timeout", "No answer within 0.5 s.", None)
    assert 400 <= attempt.duration_ms < 2000


def test_an_address_that_turned_private_is_refused_at_delivery(workspace, api_key, receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    alert, _ = crossing_alert(workspace, api_key, urls=[receiver.url("/hook")], email=False)
    settings.WEBHOOK_ALLOW_PRIVATE = False  # what a DNS answer changed to 127.0.0.1 looks like
    delivery = webhook_delivery(alert, receiver.url("/hook"))
    assert delivery_attempt(delivery.pk, now=NOW).status == "retrying"
    assert receiver.on("/hook") == []  # nothing left this server
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == "refused" and "non-public address" in attempt.error


def test_the_post_goes_to_the_address_that_was_checked(monkeypatch):
    """Resolve once, check, connect to that address: a second, different DNS answer is never used."""
    answers = iter([[(2, 1, 6, "", ("93.184.215.14", 443))], [(2, 1, 6, "", ("127.0.0.1", 443))]])
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", lambda *a, **k: next(answers))
    target = webhooks.url_target("https://hooks.example.com/x?y=1", allow_private=False)
    assert (target.addresses, target.path, target.host_header) == (("93.184.215.14",), "/x?y=1", "hooks.example.com")
    with pytest.raises(webhooks.UrlRefused, match="127.0.0.1"):
        webhooks.url_target("https://hooks.example.com/x", allow_private=False)


def test_a_removed_endpoint_cancels_its_delivery(workspace, api_key, receiver, allow_private):
    alert, [endpoint] = crossing_alert(workspace, api_key, urls=[receiver.url("/hook")], email=False)
    delivery = webhook_delivery(alert, receiver.url("/hook"))
    endpoint.endpoint.delete()
    assert delivery_attempt(delivery.pk, now=NOW).status == "cancelled"
    assert receiver.on("/hook") == []


def test_an_attempt_in_progress_holds_the_delivery(workspace, api_key, receiver, allow_private):
    alert, _ = crossing_alert(workspace, api_key, urls=[receiver.url("/hook")], email=False)
    delivery = webhook_delivery(alert, receiver.url("/hook"))
    AlertDelivery.objects.filter(pk=delivery.pk).update(claimed_until=NOW + timedelta(seconds=60), attempts=1)
    DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=NOW)  # a worker died here
    assert delivery_attempt(delivery.pk, now=NOW).status == "skipped"
    assert receiver.on("/hook") == []
    # Once the claim has expired the next attempt goes, and the one cut short is marked so.
    assert delivery_attempt(delivery.pk, now=NOW + timedelta(seconds=61)).status == "delivered"
    assert list(delivery.attempt_log.values_list("number", "outcome")) == [(1, "abandoned"), (2, "ok")]


def test_the_email_says_what_was_crossed_with_spend_budget_forecast_and_a_link(workspace, api_key, settings):
    settings.SITE_URL = "https://meterboard.example.com"
    alert, _ = crossing_alert(workspace, api_key)
    delivery = AlertDelivery.objects.get(alert=alert, channel="email")
    assert delivery_attempt(delivery.pk, now=NOW).status == "delivered"
    [message] = mail.outbox
    assert message.to == ["owner@acme.test"]
    assert message.subject == "[Meterboard] Acme has spent 100% of its November 2026 budget"
    text = message.body
    assert "Spend reached 100% of the budget ($10.00)." in text
    assert "Spend this month:    $10.00" in text and "Monthly budget:      $10.00" in text
    assert "Month-end forecast:  $10.00" in text
    assert "https://meterboard.example.com/?workspace=acme" in text
    [(html, kind)] = message.alternatives
    assert kind == "text/html" and 'href="https://meterboard.example.com/?workspace=acme"' in html
    assert "<strong>$10.00</strong>" in html


def test_a_mail_server_error_is_retried(workspace, api_key, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    alert, _ = crossing_alert(workspace, api_key)
    delivery = AlertDelivery.objects.get(alert=alert, channel="email")
    assert delivery_attempt(delivery.pk, now=NOW).status == "retrying"
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == "error" and "Connection" in attempt.error
