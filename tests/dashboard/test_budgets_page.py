"""The budgets page: create, edit, test alert and delete budgets; webhook secrets shown once;
alert history with each delivery's status; viewers only read."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from budgets.models import Alert, AlertDelivery, Budget


@pytest.fixture(autouse=True)
def _local_webhooks(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the test receivers' URLs resolve to 127.0.0.1


def form(**overrides) -> dict:
    data = {"amount": "25", "thresholds": "50, 80, 100", "forecast_alerts": "on", "email": "on", "webhooks": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_create_a_budget_with_a_webhook_whose_secret_is_shown_once(client, owner, workspace, usage):
    client.force_login(owner)
    response = client.post("/budgets/new/", form(webhooks="http://127.0.0.1:9/hook", hard_limit="on"))
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    page = response.content.decode()
    budget = Budget.objects.get(workspace=workspace)
    assert budget.amount == Decimal("25") and budget.hard_limit and budget.thresholds == [50, 80, 100]
    secret = budget.webhooks.get().secret
    assert secret in page
    assert secret not in client.get("/budgets/").content.decode()
    listing = client.get("/budgets/").content.decode()
    assert "$25.00 a month" in listing and "$7.78" in listing  # this month's spend so far
    assert "hard limit" in listing


def test_bad_input_is_explained(client, owner, workspace):
    client.force_login(owner)
    response = client.post("/budgets/new/", form(amount="0", thresholds="50, 50, abc", webhooks="ftp://nowhere"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "Thresholds are whole percents" in page
    assert not Budget.objects.exists()


def test_edit_keeps_the_secret_of_a_webhook_that_stays(client, owner, workspace):
    client.force_login(owner)
    client.post("/budgets/new/", form(webhooks="http://127.0.0.1:9/a"))
    budget = Budget.objects.get()
    old = budget.webhooks.get()
    edit = client.get(f"/budgets/{budget.pk}/").content.decode()
    assert "http://127.0.0.1:9/a" in edit and old.secret not in edit
    response = client.post(f"/budgets/{budget.pk}/save/", form(amount="40", thresholds="90", webhooks="http://127.0.0.1:9/a\nhttp://127.0.0.1:9/b"))
    assert response.status_code == 200  # a new webhook: its secret is shown on this answer
    new = budget.webhooks.get(url="http://127.0.0.1:9/b")
    assert new.secret in response.content.decode()
    assert budget.webhooks.get(url="http://127.0.0.1:9/a").secret == old.secret
    budget.refresh_from_db()
    assert budget.amount == Decimal("40") and budget.thresholds == [90]


def test_a_test_alert_shows_in_the_history_with_its_deliveries(client, owner, workspace):
    client.force_login(owner)
    client.post("/budgets/new/", form(webhooks="http://127.0.0.1:9/hook"))
    budget = Budget.objects.get()
    page = client.post(f"/budgets/{budget.pk}/test-alert/", follow=True).content.decode()
    assert "Test alert sent on 2 channels" in page
    alert = Alert.objects.get(kind=Alert.Kind.TEST)
    assert {d.channel for d in alert.deliveries.all()} == {AlertDelivery.Channel.EMAIL, AlertDelivery.Channel.WEBHOOK}
    assert "Test alert" in page and re.search(r"E-mail: (pending|delivered)", page)


def test_test_alerts_past_the_hourly_limit_say_when_to_try_again(client, owner, workspace, settings):
    settings.BUDGET_TEST_ALERTS_PER_HOUR = 2
    client.force_login(owner)
    client.post("/budgets/new/", form())
    budget = Budget.objects.get()
    for _ in range(2):
        client.post(f"/budgets/{budget.pk}/test-alert/")
    page = client.post(f"/budgets/{budget.pk}/test-alert/", follow=True)
    assert page.status_code == 200
    assert "test alerts an hour" in page.content.decode()
    assert Alert.objects.filter(kind=Alert.Kind.TEST).count() == 2


def test_delete_keeps_the_history(client, owner, workspace):
    client.force_login(owner)
    client.post("/budgets/new/", form())
    budget = Budget.objects.get()
    client.post(f"/budgets/{budget.pk}/test-alert/")
    client.post(f"/budgets/{budget.pk}/delete/")
    assert not Budget.objects.exists() and Alert.objects.count() == 1


def test_viewers_read_budgets_but_do_not_change_them(client, owner, viewer, workspace):
    client.force_login(owner)
    client.post("/budgets/new/", form())
    budget = Budget.objects.get()
    client.force_login(viewer)
    page = client.get("/budgets/").content.decode()
    assert "$25.00 a month" in page and "New budget" not in page and "Send test alert" not in page
    assert client.post("/budgets/new/", form(amount="1")).status_code == 403
    assert client.get(f"/budgets/{budget.pk}/").status_code == 403
    assert client.post(f"/budgets/{budget.pk}/delete/").status_code == 403
    assert client.post(f"/budgets/{budget.pk}/test-alert/").status_code == 403


def test_another_workspaces_budget_is_not_found(client, owner, other_owner, workspace):
    client.force_login(owner)
    client.post("/budgets/new/", form())
    budget = Budget.objects.get()
    client.force_login(other_owner)
    assert client.get(f"/budgets/{budget.pk}/").status_code == 404
    assert client.post(f"/budgets/{budget.pk}/delete/").status_code == 404
    assert client.get("/budgets/", {"workspace": "acme"}).status_code == 404
    assert Budget.objects.filter(pk=budget.pk).exists()


def test_the_overview_shows_budget_progress_and_the_budget_line(client, owner, workspace, usage):
    client.force_login(owner)
    client.post("/budgets/new/", form(amount="10"))
    page = client.get("/").content.decode()
    assert "77.8 %" in page  # $7.78 of $10
    assert "Budget 10.00 USD" in page  # the line on the cumulative chart


def test_the_unusual_spend_threshold_is_set_changed_and_turned_off_on_the_page(client, owner, workspace):
    client.force_login(owner)
    assert 'name="anomaly_threshold"' in client.get("/budgets/").content.decode()
    client.post("/budgets/new/", form(anomaly_threshold="6.5"))
    budget = Budget.objects.get()
    assert budget.anomaly_threshold == Decimal("6.5")
    assert 'value="6.5"' in client.get(f"/budgets/{budget.pk}/").content.decode()
    refused = client.post(f"/budgets/{budget.pk}/save/", form(anomaly_threshold="1"))
    assert refused.status_code == 400 and "greater than or equal to 2" in refused.content.decode()
    assert client.post(f"/budgets/{budget.pk}/save/", form(anomaly_threshold="")).status_code == 302
    budget.refresh_from_db()
    assert budget.anomaly_threshold is None  # off
