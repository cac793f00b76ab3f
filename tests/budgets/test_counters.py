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

from budgets import counter_scripts, counters
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


def test_no_counter_is_built_while_an_ingestion_is_in_flight(acme, monkeypatch):
    """The in-flight protocol (SQLite with Redis; forced here on any database)."""
    monkeypatch.setattr(counters, "uses_snapshots", lambda: False)
    workspace, key = acme
    period = current_period(timezone.now())
    started = counters.ingest_started(workspace.pk)
    assert started is True
    assert counters.month_to_date(workspace.pk, key.api_key.pk, period) == (0, 0)  # answered from the database
    assert stored(workspace.pk, key.api_key.pk, period) == (None, None)  # but not cached
    counters.ingest_committed(workspace.pk, key.api_key.pk, {period: 5 * M}, started=started)
    counters.month_to_date(workspace.pk, key.api_key.pk, period)
    assert stored(workspace.pk, key.api_key.pk, period) == (0, 0)  # (the test stored no rollups)


@pytest.mark.parametrize("protocol", ["snapshots", "in flight"])
def test_a_sum_read_before_an_ingestion_finished_is_not_stored(acme, monkeypatch, protocol):
    """The reader's database sum may lack an ingestion that completed while it read: the
    generation moved, so the sum is answered but not stored."""
    if protocol == "snapshots" and not counters.uses_snapshots():
        pytest.skip("snapshots are PostgreSQL's")
    if protocol == "in flight":
        monkeypatch.setattr(counters, "uses_snapshots", lambda: False)
    workspace, key = acme
    api = client_with(key.secret)
    period = current_period(timezone.now())
    real = counters._database_sums_seen

    def sum_then_an_ingestion_completes(*args):
        result = real(*args)
        post_events(api, spend_events(5))  # committed, and its counter step done
        return result

    monkeypatch.setattr(counters, "_database_sums_seen", sum_then_an_ingestion_completes)
    assert counters.month_to_date(workspace.pk, key.api_key.pk, period) == (0, 0)
    assert stored(workspace.pk, key.api_key.pk, period) == (None, None)
    monkeypatch.setattr(counters, "_database_sums_seen", real)
    assert counters.month_to_date(workspace.pk, key.api_key.pk, period) == (5 * M, 5 * M)


def postgres_only():
    if not counters.uses_snapshots():
        pytest.skip("the snapshot protocol is PostgreSQL's")


def test_on_postgres_ingestion_makes_one_counter_round_trip(acme, monkeypatch):
    """Issue 12: the counters cost ingestion one Redis round trip, after the commit (there were
    two: the in-flight mark before the events were stored, and the step after)."""
    postgres_only()
    workspace, key = acme
    api = client_with(key.secret)
    client = counters._backend().client
    calls = []
    real = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *args, **options: calls.append(args[0]) or real(*args, **options))
    post_events(api, spend_events(5))
    assert calls == ["EVALSHA"]


def test_a_sum_that_already_has_an_ingestion_is_not_added_to_again(acme, monkeypatch):
    """The race the in-flight mark was for: an ingestion commits, a reader sums (the events are in
    the sum) and stores the counter, then the ingestion's step after the commit runs. Its
    transaction is visible in the counter's snapshot, so nothing is added twice; the next
    ingestion's is not, so it is added."""
    postgres_only()
    from budgets.spend import SpendRecording

    workspace, key = acme
    api = client_with(key.secret)
    period = current_period(timezone.now())
    held = []
    real_committed = SpendRecording._committed
    monkeypatch.setattr(SpendRecording, "_committed", lambda self: held.append(self))
    post_events(api, spend_events(10))  # committed in PostgreSQL, its Redis step held back
    assert len(held) == 1 and held[0].transaction_id
    assert counters.month_to_date(workspace.pk, key.api_key.pk, period) == (10 * M, 10 * M)
    assert stored(workspace.pk, key.api_key.pk, period) == (10 * M, 10 * M)  # built, snapshot beside it
    real_committed(held[0])
    assert stored(workspace.pk, key.api_key.pk, period) == (10 * M, 10 * M)  # not 20
    monkeypatch.setattr(SpendRecording, "_committed", real_committed)
    post_events(api, spend_events(5, prefix="later"))
    assert stored(workspace.pk, key.api_key.pk, period) == (15 * M, 15 * M)


@pytest.mark.parametrize(
    ("transaction_id", "snapshot", "visible"),
    [
        ("100", "200:300:", True),  # before every running transaction
        ("250", "200:300:", True),  # finished when the snapshot was taken
        ("250", "200:300:210,250,260", False),  # running then
        ("2500", "200:300:250", False),  # after the snapshot (longer, not smaller)
        ("300", "200:300:", False),  # xmax itself: not yet started
        ("99", "100:100:", True),
        ("10000000000000000001", "10000000000000000000:10000000000000000005:10000000000000000001", False),
        ("10000000000000000003", "10000000000000000000:10000000000000000005:10000000000000000001", True),
        ("10000000000000000005", "10000000000000000000:10000000000000000005:", False),  # beyond 2^63
        ("9999999999999999999", "10000000000000000000:10000000000000000005:", True),
        ("250", None, False),  # a counter without a snapshot (the in-flight protocol): add
        ("", "200:300:", False),  # no transaction id: add
    ],
)
def test_visibility_follows_postgresql(transaction_id, snapshot, visible):
    """The Lua rule is PostgreSQL's for a committed transaction: visible when older than every
    transaction running at the snapshot, or older than its xmax and not among the running ones.
    Ids are compared as decimal text, whatever their size."""
    client = counters._backend().client
    script = counter_scripts.VISIBLE + "return visible(ARGV[1], ARGV[2] ~= '' and ARGV[2] or nil) and 1 or 0"
    assert client.eval(script, 0, transaction_id, snapshot or "") == int(visible)


def test_the_visibility_rule_matches_the_database(acme):
    """A real snapshot: a transaction committed before it is visible, one still running when it was
    taken is not (PostgreSQL's own pg_visible_in_snapshot agrees)."""
    postgres_only()
    import psycopg

    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as running:
        running.execute("BEGIN")
        running_id = running.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()::text")  # this test's own, committed below?
            cursor.execute(
                "SELECT pg_current_snapshot()::text, pg_visible_in_snapshot(%s::xid8, pg_current_snapshot())",
                [running_id],
            )
            snapshot, database_says = cursor.fetchone()
        running.execute("ROLLBACK")
    client = counters._backend().client
    script = counter_scripts.VISIBLE + "return visible(ARGV[1], ARGV[2]) and 1 or 0"
    assert database_says is False
    assert client.eval(script, 0, running_id, snapshot) == 0
    older = str(int(snapshot.split(":")[0]) - 1)
    assert client.eval(script, 0, older, snapshot) == 1


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
    for started in (False, None):
        assert counters.ingest_committed(workspace.pk, key.api_key.pk, {period: 1}, started=started) is True
        assert counters.ingest_committed(workspace.pk, key.api_key.pk, {period: 1}, started=started) is False
        counters.evaluation_pending_clear(workspace.pk)


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
