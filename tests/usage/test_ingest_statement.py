"""Ingestion's statement on PostgreSQL (issue 12): its rows travel as one array literal per column,
built by hand, and it is prepared once per connection by psycopg's protocol-level prepare
(core.prepared), planning it having cost PostgreSQL as much as running it for one event. These
tests hold the promises around that: what is stored is exactly what was sent, whatever characters
it holds; prepared once, still answering truthfully when the server lost it, and off when the
setting says so (an older pooler in transaction mode); references checked once per statement."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.conftest import event, ingest
from usage.models import UsageEvent
from usage.services import events_ingest


def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")


def prepared_here() -> int:
    """How many protocol-level prepared statements of ingestion this connection holds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE %s",
            ["%INSERT INTO usage_usageevent%"],
        )
        return cursor.fetchone()[0]


def ingest_statements(queries) -> int:
    return sum(1 for query in queries if "INSERT INTO usage_usageevent" in query["sql"])


@pytest.mark.django_db
def test_the_statement_is_prepared_once_per_connection(workspace, api_key, other_workspace):
    """One prepared statement, whatever the batch size or the workspace's id; each ingestion shows
    in the query log."""
    postgres_only()
    from workspaces.services import api_key_create

    ingest(workspace, api_key, [event()])
    assert prepared_here() == 1
    other_key = api_key_create(workspace=other_workspace, name="k").api_key
    with CaptureQueriesContext(connection) as captured:
        ingest(workspace, api_key, [event()])
        ingest(workspace, api_key, [event(), event()])
        ingest(other_workspace, other_key, [event() for _ in range(50)])
    assert prepared_here() == 1
    assert ingest_statements(captured.captured_queries) == 3
    assert not [q for q in captured.captured_queries if q["sql"].upper().startswith(("PREPARE", "EXECUTE"))]
    assert UsageEvent.objects.filter(workspace=workspace).count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_statement_the_server_lost_is_prepared_again(workspace, api_key):
    """A pooler that resets connections, or DEALLOCATE ALL behind psycopg's back: the next
    ingestion still stores its events and answers accepted, then duplicate for the same event."""
    postgres_only()
    import psycopg

    first = event()
    ingest(workspace, api_key, [first])
    assert prepared_here() == 1
    # Not through psycopg's own connection (which would see the command and forget its record):
    # the server alone drops it, as a pooler's reset would.
    raw = connection.connection
    raw.pgconn.exec_(b"DEALLOCATE ALL")
    assert prepared_here() == 0
    second = event()
    ingest(workspace, api_key, [second])
    assert prepared_here() == 1
    again = events_ingest(workspace=workspace, api_key=api_key, raw_events=[second, first])
    assert [r.status for r in again.results] == ["duplicate", "duplicate"]
    assert UsageEvent.objects.filter(workspace=workspace).count() == 2
    assert isinstance(raw, psycopg.Connection)


@pytest.mark.django_db(transaction=True)
def test_after_a_rollback_the_statement_is_prepared_again(workspace, api_key):
    """psycopg drops its prepared statements at a rollback: prepared inside a transaction that
    rolls back, the statement is prepared again by the next ingestion, which stores its events."""
    postgres_only()
    with pytest.raises(RuntimeError), transaction.atomic():
        ingest(workspace, api_key, [event()])
        assert prepared_here() == 1
        raise RuntimeError("roll back")
    assert UsageEvent.objects.filter(workspace=workspace).count() == 0
    with transaction.atomic():
        ingest(workspace, api_key, [event()])
    assert prepared_here() == 1
    assert UsageEvent.objects.filter(workspace=workspace).count() == 1


@pytest.mark.django_db(transaction=True)
def test_turned_off_the_plain_statement_is_sent(workspace, api_key, settings):
    """DATABASE_PREPARED_STATEMENTS=0, for a pooler in transaction mode that does not keep
    prepared statements (PgBouncer before 1.21): nothing prepared, the same outcome."""
    postgres_only()
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")
    connection.connection._prepared.clear()
    settings.DATABASE_PREPARED_STATEMENTS = False
    body = event()
    with CaptureQueriesContext(connection) as captured:
        ingest(workspace, api_key, [body])
        repeat = events_ingest(workspace=workspace, api_key=api_key, raw_events=[body])
    assert ingest_statements(captured.captured_queries) == 2
    assert prepared_here() == 0
    assert [r.status for r in repeat.results] == ["duplicate"]


AWKWARD = 'q"uote\\back{brace},comma NULL é 😀 \'single\''


@pytest.mark.django_db
def test_what_is_stored_is_what_was_sent(workspace, api_key):
    """Array literals are built by hand: quotes, backslashes, braces, commas, the word NULL,
    non-ASCII in event ids and metadata, an empty model and NULL steps (an add-on) all arrive
    unchanged."""
    metadata = {"prompt": AWKWARD, "nested": {"list": [1, 2.5, None, True, AWKWARD]}, AWKWARD: "key"}
    generation = event(event_id=AWKWARD, metadata=metadata, composition_control=True, spot=True, quantity=3)
    addon = {"event_id": "NULL", "occurred_at": "2026-11-20T12:00:00.123456+05:30", "feature": "background_removal"}
    ingest(workspace, api_key, [generation, addon])
    stored = {e.event_id: e for e in UsageEvent.objects.filter(workspace=workspace)}
    assert set(stored) == {AWKWARD, "NULL"}
    first, second = stored[AWKWARD], stored["NULL"]
    assert first.metadata == metadata
    assert (first.composition_control, first.spot, first.quantity, first.steps) == (True, True, 3, 30)
    assert second.model == "" and second.steps is None and second.width is None and second.metadata == {}
    assert second.occurred_at.isoformat() == "2026-11-20T06:30:00.123456+00:00"
    again = events_ingest(workspace=workspace, api_key=api_key, raw_events=[generation, addon])
    assert [r.status for r in again.results] == ["duplicate", "duplicate"]


# --- References: checked once per statement (migration 0005) ---------------------------------


@pytest.mark.django_db
def test_the_events_table_has_no_per_row_reference_checks():
    """PostgreSQL checked three foreign keys for every event at commit (18 ms of 40 for 1,000);
    the statement now locks what it references once."""
    postgres_only()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'usage_usageevent'::regclass AND contype = 'f'"
        )
        assert cursor.fetchall() == []


@pytest.mark.django_db
@pytest.mark.parametrize("table", ["workspaces_workspace", "workspaces_apikey", "billing_pricebook"])
def test_a_row_that_events_reference_cannot_be_deleted_even_by_sql(workspace, api_key, table):
    """As the foreign keys did, and also once the rollups (which reference the workspace and the
    key themselves) are gone."""
    postgres_only()
    from django.db import IntegrityError

    ingest(workspace, api_key, [event()])
    stored = UsageEvent.objects.get(workspace=workspace)
    row_id = {"workspaces_workspace": workspace.pk, "workspaces_apikey": api_key.pk}.get(table, stored.price_book_id)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM usage_dailyrollup WHERE workspace_id = %s", [workspace.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with pytest.raises(IntegrityError, match="usage ledger|foreign key"), transaction.atomic():
            cursor.execute(f"DELETE FROM {table} WHERE id = %s", [row_id])
    assert UsageEvent.objects.filter(workspace=workspace).count() == 1


@pytest.mark.django_db
def test_a_key_of_another_workspace_stores_nothing(workspace, other_workspace):
    postgres_only()
    from usage.storage import ReferenceMissing
    from workspaces.services import api_key_create

    foreign = api_key_create(workspace=other_workspace, name="theirs").api_key
    with pytest.raises(ReferenceMissing, match="Nothing stored"), transaction.atomic():
        events_ingest(workspace=workspace, api_key=foreign, raw_events=[event(), event()])
    assert not UsageEvent.objects.filter(workspace__in=[workspace, other_workspace]).exists()


@pytest.mark.django_db(transaction=True)
def test_a_key_deleted_while_its_events_wait_to_be_stored_stores_nothing(workspace):
    """The lock the foreign key took per event, taken once: a delete of the key commits while the
    ingestion waits for its lock; the ingestion then finds no key and stores nothing (no event
    pointing at a key that is gone)."""
    postgres_only()
    import threading
    import time

    from django.db import connections

    from usage.storage import ReferenceMissing
    from workspaces.services import api_key_create

    doomed = api_key_create(workspace=workspace, name="doomed").api_key
    outcome: dict = {}
    started = threading.Event()

    def ingest_in_another_connection():
        try:
            started.set()
            events_ingest(workspace=workspace, api_key=doomed, raw_events=[event(), event()])
            outcome["result"] = "stored"
        except ReferenceMissing as exc:
            outcome["result"] = exc
        finally:
            connections.close_all()

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM workspaces_apikey WHERE id = %s", [doomed.pk])
        thread = threading.Thread(target=ingest_in_another_connection)
        thread.start()
        started.wait(5)
        time.sleep(0.5)  # the ingestion now waits for the deleted row's lock
        assert thread.is_alive()
    thread.join(10)
    assert isinstance(outcome["result"], ReferenceMissing), outcome
    assert not UsageEvent.objects.filter(workspace=workspace).exists()
