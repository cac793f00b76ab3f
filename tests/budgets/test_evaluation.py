"""Alert evaluation: each threshold once per month and kind, forecasts, the free allowance, races."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from billing.models import Plan
from billing.selectors import default_plan
from budgets.delivery import SWEEP_EVERY
from budgets.evaluation import evaluations_request_due, workspace_evaluate
from budgets.models import Alert, AlertDelivery
from budgets.selectors import workspaces_to_evaluate
from budgets.services import budget_create
from tests.budgets.conftest import spend_events
from usage.services import events_ingest
from workspaces.services import api_key_create, workspace_create

NOW = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)  # 20 full days in, 9.5 left


def ingest(workspace, api_key, dollars: int, *, cents: int = 0, day: int = 21, now: datetime = NOW):
    events = spend_events(dollars, cents=cents, occurred_at=f"2026-11-{day:02d}T08:00:00Z")
    result = events_ingest(workspace=workspace, api_key=api_key, raw_events=events, now=now)
    assert result.count("accepted") == len(events)


def crossed(workspace, now: datetime = NOW) -> list[tuple[str, int]]:
    """Evaluate; the budget alerts recorded (the free allowance notice has its own tests)."""
    return [(a.kind, a.threshold) for a in workspace_evaluate(workspace.pk, now=now).recorded if a.budget_id]


def alerts(**filters) -> list[tuple]:
    return sorted(Alert.objects.filter(**filters).values_list("kind", "threshold"), key=lambda kt: (kt[0], kt[1] or 0))


def test_each_threshold_alerts_once_when_spend_crosses_it(workspace, api_key):
    budget, _ = budget_create(workspace=workspace, amount=Decimal(100), thresholds=[50, 80, 100], forecast_alerts=False)
    ingest(workspace, api_key, 45, day=2)
    assert crossed(workspace) == []
    ingest(workspace, api_key, 5, day=3)  # exactly 50 %: reached
    assert crossed(workspace) == [("actual", 50)]
    assert crossed(workspace) == []  # not twice
    ingest(workspace, api_key, 55, day=4)  # 105 %: 80 and 100 at once
    recorded = workspace_evaluate(workspace.pk, now=NOW).recorded
    assert [(a.kind, a.threshold) for a in recorded] == [("actual", 80), ("actual", 100)]
    alert = recorded[1]
    assert (alert.spend, alert.budget_amount, alert.period.isoformat()) == (Decimal(105), Decimal(100), "2026-11-01")
    assert alerts(budget=budget) == [("actual", 50), ("actual", 80), ("actual", 100)]


def test_a_forecast_alert_warns_before_the_spend_gets_there(workspace, api_key):
    budget_create(workspace=workspace, amount=Decimal(100), thresholds=[50, 80, 100])
    # $7 a day over the last 7 full days ($49 so far), 9.5 days left: forecast 49 + 66.5 = 115.5.
    for day in range(14, 21):
        ingest(workspace, api_key, 5, cents=200, day=day)
    recorded = [a for a in workspace_evaluate(workspace.pk, now=NOW).recorded if a.budget_id]
    assert [(a.kind, a.threshold) for a in recorded] == [("forecast", 50), ("forecast", 80), ("forecast", 100)]
    assert recorded[0].forecast == Decimal("115.5")
    # Spend then reaches 50 %: an actual alert too; the forecast ones are not repeated.
    ingest(workspace, api_key, 0, cents=100, day=21)
    assert crossed(workspace) == [("actual", 50)]


def test_no_forecast_alerts_when_switched_off(workspace, api_key):
    budget_create(workspace=workspace, amount=Decimal(100), thresholds=[50, 100], forecast_alerts=False)
    for day in range(14, 21):
        ingest(workspace, api_key, 5, cents=200, day=day)
    assert crossed(workspace) == []


def test_a_key_budget_counts_only_its_key(workspace, api_key):
    other_key = api_key_create(workspace=workspace, name="other").api_key
    budget_create(workspace=workspace, amount=Decimal(10), thresholds=[100], forecast_alerts=False, api_key=api_key)
    ingest(workspace, other_key, 20)
    assert crossed(workspace) == []
    ingest(workspace, api_key, 10)
    assert crossed(workspace) == [("actual", 100)]


def test_alerts_are_per_month(workspace, api_key):
    budget_create(workspace=workspace, amount=Decimal(10), thresholds=[100], forecast_alerts=False)
    ingest(workspace, api_key, 10)
    workspace_evaluate(workspace.pk, now=NOW)
    december = datetime(2026, 12, 2, tzinfo=timezone.utc)
    assert crossed(workspace, december) == []  # nothing spent in December yet
    events_ingest(
        workspace=workspace, api_key=api_key, raw_events=spend_events(10, occurred_at="2026-12-01T10:00:00Z"), now=december
    )
    assert crossed(workspace, december) == [("actual", 100)]
    assert alerts(period="2026-12-01", budget__isnull=False) == [("actual", 100)]


def test_deliveries_follow_the_channels(workspace, api_key, allow_private):
    from django.contrib.auth import get_user_model

    from workspaces.models import Membership

    viewer = get_user_model().objects.create_user("viewer@acme.test", "viewer@acme.test")
    admin = get_user_model().objects.create_user("admin@acme.test", "admin@acme.test")
    Membership.objects.create(workspace=workspace, user=viewer, role="viewer")
    Membership.objects.create(workspace=workspace, user=admin, role="admin")
    loud, _ = budget_create(workspace=workspace, amount=Decimal(10), thresholds=[100], forecast_alerts=False,
                            webhook_urls=["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"])
    quiet, _ = budget_create(workspace=workspace, amount=Decimal(10), thresholds=[100], forecast_alerts=False, email=False)
    ingest(workspace, api_key, 10)
    workspace_evaluate(workspace.pk, now=NOW)
    targets = sorted(AlertDelivery.objects.filter(alert__budget=loud).values_list("channel", "target"))
    assert targets == [("email", "admin@acme.test"), ("email", "owner@acme.test"),
                       ("webhook", "http://127.0.0.1:9/a"), ("webhook", "http://127.0.0.1:9/b")]
    assert Alert.objects.filter(budget=quiet).count() == 1  # recorded, in the history
    assert not AlertDelivery.objects.filter(alert__budget=quiet).exists()  # but nobody to tell


def test_the_free_allowance_notice_is_sent_once_a_month(workspace, api_key):
    ingest(workspace, api_key, 0, cents=40)
    assert crossed(workspace) == []
    ingest(workspace, api_key, 0, cents=10)  # $0.50: the default plan's free tier credit
    [notice] = workspace_evaluate(workspace.pk, now=NOW).recorded
    assert (notice.kind, notice.budget_id, notice.spend) == ("free_allowance", None, Decimal("0.5"))
    assert list(notice.deliveries.values_list("channel", "target")) == [("email", "owner@acme.test")]
    ingest(workspace, api_key, 5)
    assert crossed(workspace) == []


def test_the_free_allowance_follows_the_workspaces_plan(workspace, api_key):
    from billing.models import PlanAssignment

    bigger = Plan.objects.create(name="Generous", free_tier_credit=Decimal(20))
    PlanAssignment.objects.create(workspace=workspace, plan=bigger, effective_from=datetime(2026, 1, 1, tzinfo=timezone.utc))
    ingest(workspace, api_key, 10)
    assert crossed(workspace) == []
    ingest(workspace, api_key, 10)
    assert [a.kind for a in workspace_evaluate(workspace.pk, now=NOW).recorded] == ["free_allowance"]


def test_the_safety_net_covers_budgets_and_untold_free_allowances(workspace, api_key, other_workspace, monkeypatch):
    from budgets import counters

    monkeypatch.setattr(counters, "LOCAL_PENDING_SECONDS", 60)  # without Redis: a slow test is not a new burst
    quiet = workspace_create(slug="quiet", owner_email="q@quiet.test")
    budget_create(workspace=other_workspace, amount=Decimal(100), thresholds=[50])
    ingest(workspace, api_key, 0, cents=60)
    ingest(quiet, api_key_create(workspace=quiet, name="k").api_key, 0, cents=10)
    period = NOW.date().replace(day=1)
    assert workspaces_to_evaluate(period) == sorted([workspace.pk, other_workspace.pk])
    workspace_evaluate(workspace.pk, now=NOW)  # told now
    assert workspaces_to_evaluate(period) == [other_workspace.pk]
    assert evaluations_request_due(now=NOW) == 1
    assert evaluations_request_due(now=NOW) == 0  # still pending: not enqueued twice


def test_the_management_command(workspace, api_key, capsys):
    budget_create(workspace=workspace, amount=Decimal(10), thresholds=[50, 100], forecast_alerts=False)
    ingest(workspace, api_key, 5, day=1)
    call_command("evaluate_budgets")
    out = capsys.readouterr().out
    assert f"workspace {workspace.pk}: actual alert at 50%" in out
    assert f"workspace {workspace.pk}: free_allowance alert" in out
    assert "1 workspace(s) evaluated, 2 new alert(s)" in out
    call_command("evaluate_budgets", "--workspace", workspace.slug)
    assert "0 new alert(s)" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_racing_evaluators_record_and_send_each_alert_once():
    """Eight evaluations at the same instant, each on its own connection: the unique index lets one
    insert each alert; only that one creates (and enqueues) its deliveries."""
    default_plan()
    workspace = workspace_create(slug="race", owner_email="owner@race.test")
    api_key = api_key_create(workspace=workspace, name="k").api_key
    budget_create(workspace=workspace, amount=Decimal(10), thresholds=[25, 50, 75, 100], forecast_alerts=True)
    budget_create(workspace=workspace, amount=Decimal(40), thresholds=[10, 20], forecast_alerts=False)
    ingest(workspace, api_key, 10)
    barrier = threading.Barrier(8)

    def evaluate():
        try:
            barrier.wait(timeout=10)
            return [alert.pk for alert in workspace_evaluate(workspace.pk, now=NOW).recorded]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        recorded = [pk for result in pool.map(lambda _: evaluate(), range(8)) for pk in result]
    # 4 + 2 thresholds and the free allowance, each recorded by exactly one evaluator.
    assert len(recorded) == len(set(recorded)) == Alert.objects.count() == 7
    assert AlertDelivery.objects.count() == 7  # one e-mail each, to the one owner
    assert AlertDelivery.objects.values("alert").distinct().count() == 7


def test_evaluation_of_a_missing_workspace_is_a_no_op(db):
    assert workspace_evaluate(987654, now=NOW).recorded == []


def test_old_days_do_not_count(workspace, api_key):
    budget_create(workspace=workspace, amount=Decimal(10), thresholds=[100], forecast_alerts=False)
    october = NOW - timedelta(days=30)
    events_ingest(workspace=workspace, api_key=api_key, raw_events=spend_events(50, occurred_at="2026-10-20T10:00:00Z"), now=october)
    assert crossed(workspace) == []


def test_beat_evaluates_every_minute_and_sweeps_lost_deliveries():
    from config.schedule import CELERY_BEAT_SCHEDULE as schedule

    evaluate = schedule["budgets-evaluate"]
    assert evaluate["task"] == "budgets.tasks.evaluations_request_due"
    assert evaluate["schedule"].minute == set(range(60)) and evaluate["schedule"].hour == set(range(24))
    assert evaluate["options"]["expires"] < 60
    sweep = schedule["budgets-deliveries-due"]
    assert sweep["task"] == "budgets.tasks.deliveries_enqueue_due"
    assert sweep["schedule"] == SWEEP_EVERY  # what its look-ahead assumes
    assert SWEEP_EVERY <= timedelta(seconds=15) and sweep["options"]["expires"] <= SWEEP_EVERY.total_seconds()
    assert "budgets-deliveries-retry-overdue" not in schedule  # the 5-minute sweep it replaced


def test_a_pending_mark_left_by_a_dead_worker_expires_within_30_seconds(workspace, api_key):
    """The mark stops requests from enqueueing a second evaluation while one is queued; a
    worker that died holding that task (before it cleared the mark) must not silence the beat
    for long: it was 5 minutes."""
    from budgets import counters

    backend = counters._backend()
    if backend is None:
        pytest.skip("without Redis the mark lives a second in the web process (LOCAL_PENDING_SECONDS)")
    assert counters.evaluation_pending_set(workspace.pk) is True
    _, _, pending = counters._keys(workspace.pk)
    assert 0 < backend.client.ttl(pending) <= 30
    period = NOW.date().replace(day=1)
    assert counters.ingest_committed(workspace.pk, api_key.pk, {period: 1}, started=False) is False
    assert 0 < backend.client.ttl(pending) <= 30  # ingestion's own mark: the same lifetime
    backend.client.delete(pending)  # what 30 s do
    assert counters.evaluation_pending_set(workspace.pk) is True
