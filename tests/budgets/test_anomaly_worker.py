"""Spend anomaly alerts end to end: the hourly check run by a real Celery worker (the beat's task,
on the suite's broker), the alert e-mailed (to files) and POSTed, signed, to a local webhook
receiver; run again, nothing more is sent."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from budgets import tasks
from budgets.models import AlertDelivery, SpendAnomaly
from tests.budgets.conftest import wait_until
from tests.budgets.test_anomalies import history, rollup
from tests.conftest import client_with
from workspaces.services import api_key_create, workspace_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_hourly_check_on_a_worker_fires_once_by_email_and_webhook(worker, receiver, allow_private):
    worker.forget_mails()
    workspace = workspace_create(slug="spiky", owner_email="owner@spiky.test", name="Spiky")
    issued = api_key_create(workspace=workspace, name="generator")
    api = client_with(issued.secret)
    created = api.post(
        "/api/v1/budgets",
        {"amount": "100000", "forecast_alerts": False, "anomaly_threshold": "5",
         "webhooks": [{"url": receiver.url("/anomaly")}]},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    today = timezone.now().date()
    history(workspace, issued.api_key, days=21, end=today)
    rollup(workspace, issued.api_key, today, 2000)  # ~19× a usual day, even judged as a whole day

    tasks.anomalies_check_today.delay()
    [request] = receiver.wait_for("/anomaly", 1)
    [body] = receiver.verified("/anomaly", created.json()["webhooks"][0]["secret"])
    assert request.headers["Meterboard-Event"] == "spend.anomaly"
    assert body["type"] == "spend.anomaly" and body["workspace"] == "spiky"
    assert body["anomaly"]["day"] == today.isoformat() and body["anomaly"]["amount"] == "2000.000000"
    assert body["anomaly"]["threshold"] == "5.0" and Decimal(body["anomaly"]["score"]) >= 5
    [mail] = wait_until(lambda: [m for m in worker.mails() if "Unusual spend" in m], what="the anomaly e-mail")
    assert "To: owner@spiky.test" in mail
    assert "Subject: [Meterboard] Unusual spend: Spiky spent $2,000.00 on" in mail  # the rest is folded
    assert "Spent:               $2,000.00" in mail and "Score:               " in mail
    wait_until(lambda: not AlertDelivery.objects.exclude(status="delivered").exists(), what="all delivered")

    tasks.anomalies_check_today.delay()  # the next hour's run
    wait_until(
        lambda: len(re.findall(r"anomalies_check_today\[.*\] succeeded", worker.log_text())) >= 2,
        what="the second run",
    )
    time.sleep(1)  # anything sent again would have arrived by now
    assert SpendAnomaly.objects.count() == 1
    assert len(receiver.on("/anomaly")) == 1
    assert len([m for m in worker.mails() if "Unusual spend" in m]) == 1
    assert (timezone.now() - SpendAnomaly.objects.get().created_at) < timedelta(minutes=2)
