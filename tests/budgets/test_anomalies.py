"""Spend anomaly alerts through the database: the check over rollups (budgets.anomalies), its
alerts and deliveries, the thresholds budgets set, and GET /anomalies."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail

from budgets.anomalies import anomalies_check, anomalies_check_today, anomalies_check_yesterday
from budgets.delivery import alert_payload, delivery_attempt
from budgets.models import Alert, AlertDelivery, Budget, SpendAnomaly
from usage.models import DailyRollup
from workspaces.services import api_key_create

pytestmark = pytest.mark.django_db
USD = 1_000_000
DAY = date(2026, 11, 18)  # a Wednesday
NOW = datetime(2026, 11, 19, 0, 30, tzinfo=UTC)  # the daily check, judging DAY


def rollup(workspace, key, day: date, dollars: int) -> None:
    DailyRollup.objects.create(
        workspace=workspace, api_key=key, day=day, feature="training", unit_price_micros=5 * USD,
        quantity=dollars // 5 or 1, amount_micros=dollars * USD, events=1,
    )  # fmt: skip


def history(workspace, key, *, days: int = 20, dollars: int = 100, end: date = DAY) -> None:
    """`days` normal days (dollars ± a few) before `end`."""
    for n in range(1, days + 1):
        rollup(workspace, key, end - timedelta(days=n), dollars + (n % 3) * 5)


def test_a_spike_is_recorded_once_with_its_numbers_and_told_by_email(workspace, api_key):
    history(workspace, api_key)
    rollup(workspace, api_key, DAY, 500)
    report = anomalies_check_yesterday(now=NOW)
    [found] = report.recorded
    assert (found.day, found.api_key_id, found.amount, found.baseline) == (DAY, None, Decimal("500.000000"), Decimal("105.000000"))
    assert found.score >= Decimal(4) and found.threshold == Decimal("4.0") and found.fraction == 1
    # The workspace's only key is not judged apart: one spike, one alert.
    assert SpendAnomaly.objects.count() == 1
    alert = found.alert
    assert alert.kind == Alert.Kind.ANOMALY and alert.spend == Decimal("500.000000")
    [delivery] = alert.deliveries.all()
    assert (delivery.channel, delivery.target) == ("email", "owner@acme.test")
    assert delivery_attempt(delivery.pk).status == "delivered"
    [message] = mail.outbox
    assert message.subject == "[Meterboard] Unusual spend: Acme spent $500.00 on Wednesday 18 November 2026, against a usual $105.00"
    assert "Usual (median):      $105.00" in message.body and f"Score:               {found.score}" in message.body
    # Again (the hourly run, a second beat): nothing new.
    assert anomalies_check_yesterday(now=NOW).recorded == []
    assert anomalies_check(day=DAY, fraction=Decimal("0.9"), now=NOW).recorded == []
    assert SpendAnomaly.objects.count() == Alert.objects.count() == 1
    # And on the workspace's event stream, once, as its schema says.
    from notifications.models import Event
    from notifications.schemas import data_errors

    [event] = Event.objects.filter(workspace=workspace, type="usage.anomaly")
    assert event.data["amount"] == "500.000000" and event.data["baseline"] == "105.000000" and event.data["api_key"] is None
    assert data_errors("usage.anomaly", event.version, event.data) == []


def test_normal_days_are_quiet(workspace, api_key):
    history(workspace, api_key)
    rollup(workspace, api_key, DAY, 110)
    report = anomalies_check_yesterday(now=NOW)
    assert report.series == 1 and report.recorded == []


def test_today_so_far_is_judged_hourly_against_the_pro_rated_baseline(workspace, api_key):
    history(workspace, api_key, end=DAY)
    rollup(workspace, api_key, DAY, 150)  # by 09:00, more than a whole usual day
    nine = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
    [found] = anomalies_check_today(now=nine).recorded
    assert found.fraction == Decimal("0.3750") and found.baseline == Decimal("39.375000")  # 105 × 9/24
    assert "so far" in alert_payload(found.alert)["message"]


def test_each_key_is_judged_with_its_budgets_threshold_and_told_through_its_webhooks(workspace, api_key):
    other = api_key_create(workspace=workspace, name="batch jobs").api_key
    history(workspace, api_key)
    history(workspace, other, dollars=10)
    rollup(workspace, api_key, DAY, 100)
    rollup(workspace, other, DAY, 40)  # 4× the key's usual, a small part of the workspace's
    budget = Budget.objects.create(workspace=workspace, api_key=other, amount=Decimal(1000), email=False,
                                   anomaly_threshold=Decimal("3.0"))  # fmt: skip
    budget.webhooks.create(url="https://hooks.example.com/batch", secret="whsec_x")
    [found] = anomalies_check_yesterday(now=NOW).recorded
    assert (found.api_key_id, found.threshold) == (other.pk, Decimal("3.0"))
    [delivery] = found.alert.deliveries.all()
    assert (delivery.channel, delivery.target) == ("webhook", "https://hooks.example.com/batch")
    body = alert_payload(found.alert)
    assert body["type"] == "spend.anomaly" and body["budget"]["id"] == budget.pk
    assert body["anomaly"]["api_key"] == other.display_prefix and body["anomaly"]["amount"] == "40.000000"
    assert body["anomaly"]["baseline"] == "15.000000"


def test_a_workspace_budget_without_a_threshold_turns_the_workspace_check_off(workspace, api_key):
    history(workspace, api_key)
    rollup(workspace, api_key, DAY, 500)
    Budget.objects.create(workspace=workspace, amount=Decimal(1000), anomaly_threshold=None)
    assert anomalies_check_yesterday(now=NOW).recorded == []
    Budget.objects.update(anomaly_threshold=Decimal("20.0"))  # a high bar: 500 against 105 still passes it
    [found] = anomalies_check_yesterday(now=NOW).recorded
    assert found.threshold == Decimal("20.0")


def test_without_a_budget_the_default_threshold_applies_and_0_turns_it_off(workspace, api_key, settings):
    history(workspace, api_key)
    rollup(workspace, api_key, DAY, 500)
    settings.SPEND_ANOMALY_THRESHOLD = "0"
    assert anomalies_check_yesterday(now=NOW).recorded == []
    settings.SPEND_ANOMALY_THRESHOLD = "6"
    assert anomalies_check_yesterday(now=NOW).recorded[0].threshold == Decimal("6.0")


def test_a_new_workspace_is_not_judged_before_a_week_of_history(workspace, api_key):
    history(workspace, api_key, days=5)
    rollup(workspace, api_key, DAY, 5000)
    report = anomalies_check_yesterday(now=NOW)
    assert report.series == 0 and report.recorded == []


# --- The API ---------------------------------------------------------------------------------------


def test_anomalies_api_lists_the_workspaces_own_only(workspace, api_key, api, other_api, other_workspace):
    history(workspace, api_key)
    rollup(workspace, api_key, DAY, 500)
    history(other_workspace, other_workspace_key := api_key_create(workspace=other_workspace, name="k").api_key)
    rollup(other_workspace, other_workspace_key, DAY, 900)
    assert len(anomalies_check_yesterday(now=NOW).recorded) == 2
    response = api.get("/api/v1/anomalies", {"start": "2026-11-01", "end": "2026-11-30"})
    assert response.status_code == 200, response.content
    [row] = response.json()
    assert (row["day"], row["api_key"], row["amount"], row["baseline"]) == ("2026-11-18", None, "500.000000", "105.000000")
    assert Decimal(row["score"]) >= 4 and row["threshold"] == "4.0" and row["fraction_of_day"] == "1.0000"
    assert row["alert"] == SpendAnomaly.objects.get(workspace=workspace).alert_id
    [theirs] = other_api.get("/api/v1/anomalies", {"start": "2026-11-01", "end": "2026-11-30"}).json()
    assert theirs["amount"] == "900.000000"
    assert api.get("/api/v1/anomalies", {"start": "2026-11-19", "end": "2026-11-30"}).json() == []


@pytest.mark.parametrize(
    "query, errors",
    [
        ({"start": "yesterday"}, {"start"}),
        ({"start": "2026-11-20", "end": "2026-11-01"}, {"end"}),
        ({"start": "1999-01-01", "end": "2000-01-05"}, {"start"}),
        ({"start": "2020-01-01", "end": "2026-01-01"}, {"end"}),
        ({"since": "2026-11-01"}, {"since"}),
    ],
)
def test_anomalies_api_answers_bad_queries_per_field(api, query, errors):
    response = api.get("/api/v1/anomalies", query)
    assert response.status_code == 400 and set(response.json()) == errors, response.content


def test_the_budget_api_sets_and_validates_the_anomaly_threshold(api):
    created = api.post("/api/v1/budgets", {"amount": "100"}, format="json")
    assert created.status_code == 201 and created.json()["anomaly_threshold"] == "4.0"
    url = f"/api/v1/budgets/{created.json()['id']}"
    for bad in ("1.5", "25", "0", "abc", "3.25"):
        response = api.patch(url, {"anomaly_threshold": bad}, format="json")
        assert response.status_code == 400 and set(response.json()) == {"anomaly_threshold"}, (bad, response.content)
    assert api.patch(url, {"anomaly_threshold": "6.5"}, format="json").json()["anomaly_threshold"] == "6.5"
    assert api.patch(url, {"anomaly_threshold": None}, format="json").json()["anomaly_threshold"] is None
    assert Budget.objects.get().anomaly_threshold is None
    made = api.post("/api/v1/budgets", {"amount": "100", "anomaly_threshold": "2"}, format="json")
    assert made.json()["anomaly_threshold"] == "2.0"


def test_deliveries_of_an_anomaly_are_kept_when_sent_again(workspace, api_key):
    """The delivery machinery is the budgets' own: a second attempt of a delivered one sends nothing."""
    history(workspace, api_key)
    rollup(workspace, api_key, DAY, 500)
    [found] = anomalies_check_yesterday(now=NOW).recorded
    [delivery] = AlertDelivery.objects.filter(alert=found.alert)
    assert delivery_attempt(delivery.pk).status == "delivered"
    assert delivery_attempt(delivery.pk).status == "skipped"
    assert len(mail.outbox) == 1
