"""The month-to-date counters in Redis: built from the rollups only when no ingestion can be
missed or counted twice, then moved only by newly inserted events. (Redis only.)"""

from __future__ import annotations

import json
from datetime import date

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from budgets import counters
from core.periods import current_period
from tests.budgets.conftest import spend_events
from tests.conftest import client_with, post_events
from workspaces.services import api_key_create, workspace_create

pytestmark = [
    pytest.mark.skipif(not settings.REDIS_URL, reason="the counters live in Redis; without it the rollups are read"),
    pytest.mark.django_db(transaction=True),
]
M = 1_000_000


@pytest.fixture
def acme():
    workspace = workspace_create(slug="acme", owner_email="owner@acme.test")
    return workspace, api_key_create(workspace=workspace, name="generator")


def stored(workspace_id: int, api_key_id: int, period: date) -> tuple[int | None, int | None]:
    keys = counters._counter_keys(workspace_id, api_key_id, period)
    values = counters._backend().client.mget(keys)
    return tuple(None if v is None else int(v) for v in values)


def test_a_read_builds_the_counter_and_ingestion_then_adds_to_it_without_the_database(acme):
    workspace, key = acme
    api = client_with(key.secret)
    period = current_period(timezone.now())
    post_events(api, spend_events(10))
    assert stored(workspace.pk, key.api_key.pk, period) == (None, None)  # nothing to add to yet
    assert counters.month_to_date(workspace.pk, key.api_key.pk, period) == (10 * M, 10 * M)
    assert stored(workspace.pk, key.api_key.pk, period) == (10 * M, 10 * M)
    post_events(api, spend_events(5, cents=30))
    assert stored(workspace.pk, key.api_key.pk, period) == (15_300_000, 15_300_000)
    with CaptureQueriesContext(connection) as queries:
        api.get("/api/v1/allowance")
    assert not [q for q in queries.captured_queries if "dailyrollup" in q["sql"]]


def test_no_counter_is_built_while_an_ingestion_is_in_flight(acme):
    workspace, key = acme
    period = current_period(timezone.now())
    started = counters.ingest_started(workspace.pk)
    assert counters.month_to_date(workspace.pk, key.api_key.pk, period) == (0, 0)  # answered from the database
    assert stored(workspace.pk, key.api_key.pk, period) == (None, None)  # but not cached
    counters.ingest_committed(workspace.pk, key.api_key.pk, {period: 5 * M}, started=started)
    counters.month_to_date(workspace.pk, key.api_key.pk, period)
    assert stored(workspace.pk, key.api_key.pk, period) == (0, 0)  # (the test stored no rollups)


def test_a_sum_read_before_an_ingestion_finished_is_not_stored(acme, monkeypatch):
    """The reader's database sum may lack an ingestion that completed while it read: the
    generation moved, so the sum is answered but not stored."""
    workspace, key = acme
    period = current_period(timezone.now())
    real = counters._database_sums

    def sum_then_an_ingestion_completes(*args):
        result = real(*args)
        counters.ingest_committed(workspace.pk, key.api_key.pk, {period: M}, started=counters.ingest_started(workspace.pk))
        return result

    monkeypatch.setattr(counters, "_database_sums", sum_then_an_ingestion_completes)
    counters.month_to_date(workspace.pk, key.api_key.pk, period)
    assert stored(workspace.pk, key.api_key.pk, period) == (None, None)


def test_counters_of_two_databases_sharing_redis_are_apart(acme, monkeypatch):
    workspace, key = acme
    period = current_period(timezone.now())
    counters.month_to_date(workspace.pk, key.api_key.pk, period)
    mine = counters.key_prefix()
    monkeypatch.setitem(connection.settings_dict, "NAME", "another_database")
    assert counters.key_prefix() != mine
    assert stored(workspace.pk, key.api_key.pk, period) == (None, None)


def test_ingestion_marks_one_evaluation_pending_until_the_task_starts(acme):
    workspace, key = acme
    period = current_period(timezone.now())
    assert counters.ingest_committed(workspace.pk, key.api_key.pk, {period: 1}, started=False) is True
    assert counters.ingest_committed(workspace.pk, key.api_key.pk, {period: 1}, started=False) is False
    counters.evaluation_pending_clear(workspace.pk)
    assert counters.ingest_committed(workspace.pk, key.api_key.pk, {period: 1}, started=False) is True


def test_the_hard_limits_are_cached_and_dropped_when_a_budget_changes(acme):
    from decimal import Decimal

    from budgets.services import budget_create, budget_update

    workspace, key = acme
    api = client_with(key.secret)
    budget, _ = budget_create(workspace=workspace, amount=Decimal(10), thresholds=[], hard_limit=True)
    limits_key, _ = counters._limits_keys(workspace.pk)
    assert api.get("/api/v1/allowance").json()["budget"] == "10.000000"
    assert json.loads(counters._backend().client.get(limits_key)) == [[None, 10 * M]]
    with CaptureQueriesContext(connection) as queries:
        api.get("/api/v1/allowance")
    assert not [q for q in queries.captured_queries if "budgets_budget" in q["sql"]]  # from the cache
    budget_update(budget=budget, changes={"amount": Decimal(25)})
    assert counters._backend().client.get(limits_key) is None
    assert api.get("/api/v1/allowance").json()["budget"] == "25.000000"


def test_limits_read_before_a_change_committed_are_not_stored(acme):
    workspace, key = acme
    period = current_period(timezone.now())
    limits_key, _ = counters._limits_keys(workspace.pk)

    def old_limits_then_a_change_commits():
        counters.limits_changed(workspace.pk)
        return [(None, M)]

    _, _, limits = counters.allowance_inputs(workspace.pk, key.api_key.pk, period, load_limits=old_limits_then_a_change_commits)
    assert limits == [(None, M)]  # answered
    assert counters._backend().client.get(limits_key) is None  # not stored
