"""Ingestion's statement is prepared once per PostgreSQL connection (core.prepared, issue 12):
planning it cost PostgreSQL as much as running it for one event. These tests hold the promises
around that: prepared once, still answering truthfully when the server lost it, and off when the
setting says so (a pooler in transaction mode)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.conftest import event, ingest
from usage.models import UsageEvent
from usage.services import events_ingest

NAME = "mb_usage_ingest"


def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")


def prepared_here() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = %s", [NAME])
        return cursor.fetchone()[0] == 1


def statements(queries) -> list[str]:
    return [query["sql"].split(None, 1)[0].upper() for query in queries]


@pytest.mark.django_db
def test_the_statement_is_prepared_once_per_connection(workspace, api_key):
    postgres_only()
    ingest(workspace, api_key, [event()])
    assert prepared_here()
    with CaptureQueriesContext(connection) as captured:
        ingest(workspace, api_key, [event()])
        ingest(workspace, api_key, [event(), event()])
    assert "PREPARE" not in statements(captured.captured_queries)
    assert statements(captured.captured_queries).count("EXECUTE") == 2
    assert UsageEvent.objects.filter(workspace=workspace).count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_statement_the_server_lost_is_prepared_again(workspace, api_key):
    """A pooler that resets connections, or DEALLOCATE ALL: the next ingestion still stores its
    events and answers accepted, then duplicate for the same event."""
    postgres_only()
    first = event()
    ingest(workspace, api_key, [first])
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    second = event()
    ingest(workspace, api_key, [second])
    assert prepared_here()
    again = events_ingest(workspace=workspace, api_key=api_key, raw_events=[second, first])
    assert [r.status for r in again.results] == ["duplicate", "duplicate"]
    assert UsageEvent.objects.filter(workspace=workspace).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_keeps_the_statement(workspace, api_key):
    """PREPARE is not transactional: prepared inside a transaction that rolls back, the statement
    is still there for the next ingestion (which must not fail looking for it)."""
    postgres_only()
    with pytest.raises(RuntimeError), transaction.atomic():
        ingest(workspace, api_key, [event()])
        raise RuntimeError("roll back")
    assert UsageEvent.objects.filter(workspace=workspace).count() == 0
    assert prepared_here()
    with transaction.atomic():
        ingest(workspace, api_key, [event()])
    assert UsageEvent.objects.filter(workspace=workspace).count() == 1


@pytest.mark.django_db
def test_turned_off_the_plain_statement_is_sent(workspace, api_key, settings):
    """DATABASE_PREPARED_STATEMENTS=0, for PgBouncer in transaction mode: no PREPARE, no EXECUTE,
    the same outcome."""
    postgres_only()
    settings.DATABASE_PREPARED_STATEMENTS = False
    body = event()
    with CaptureQueriesContext(connection) as captured:
        ingest(workspace, api_key, [body])
        repeat = events_ingest(workspace=workspace, api_key=api_key, raw_events=[body])
    assert {"PREPARE", "EXECUTE"}.isdisjoint(statements(captured.captured_queries))
    assert [r.status for r in repeat.results] == ["duplicate"]
