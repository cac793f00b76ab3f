"""The overview marks anomalous days on the daily chart (a marker trace whose hover gives the
amount against the baseline) and lists them in the chart's table; only the workspace's own."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from budgets.anomalies import anomalies_check
from tests.budgets.test_anomalies import history, rollup
from tests.dashboard.test_pages import figures, signed_in
from workspaces.services import api_key_create, workspace_create


def test_the_daily_chart_marks_an_anomalous_day_and_its_table_lists_it(client, owner, workspace, api_key):
    day = timezone.now().date() - timedelta(days=1)
    history(workspace, api_key, days=20, end=day)
    rollup(workspace, api_key, day, 500)
    other = workspace_create(slug="globex", owner_email="owner@globex.test", name="Globex")
    other_key = api_key_create(workspace=other, name="k").api_key
    history(other, other_key, days=20, end=day - timedelta(days=2))
    rollup(other, other_key, day - timedelta(days=2), 900)
    [found] = anomalies_check(day=day).recorded
    anomalies_check(day=day - timedelta(days=2))  # Globex's, never shown to Acme

    signed_in(client, owner)
    response = client.get("/", {"period": "custom", "start": (day - timedelta(days=25)).isoformat(), "end": day.isoformat()})
    assert response.status_code == 200
    daily = figures(response)["chart-daily"]
    [mark] = [trace for trace in daily["data"] if trace["name"] == "Unusual spend"]
    assert mark["x"] == [day.isoformat()] and mark["y"] == [500.0]
    assert mark["text"] == [f"Workspace: $500.00 vs usual $105.00 (score {found.score})"]
    page = response.content.decode()
    assert "<th scope=\"col\" class=\"num\">Unusual spend</th>" in page
    assert f"Workspace: $500.00 vs usual $105.00 (score {found.score})</td>" in page
    assert "$900.00" not in page
    assert found.baseline == Decimal("105.000000")


def test_a_period_without_anomalies_has_no_mark(client, owner, workspace, api_key):
    day = timezone.now().date() - timedelta(days=1)
    history(workspace, api_key, days=20, end=day)
    rollup(workspace, api_key, day, 110)
    assert anomalies_check(day=day).recorded == []
    signed_in(client, owner)
    daily = figures(client.get("/", {"period": "custom", "start": (day - timedelta(days=25)).isoformat(), "end": day.isoformat()}))["chart-daily"]
    assert "Unusual spend" not in {trace["name"] for trace in daily["data"]}
    assert "Unusual spend" not in client.get("/").content.decode()
