"""Usage migration 0006 on a populated table (issue 13): an operator's database with events goes
to monthly partitions and event receipts without losing or duplicating a row, ingestion carries on
from the same ids, the events it already had stay exactly-once, and the migration reverses."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from django.core.management import call_command
from django.db import connection

from tests.conftest import event, on_postgres
from usage.models import EventReceipt, UsageEvent
from usage.services import events_ingest
from workspaces.services import api_key_create, workspace_create

UTC = timezone.utc
ARRIVALS = [datetime(2025, 12, 31, 23, 59, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
            datetime(2026, 3, 15, 8, 0, tzinfo=UTC)]  # fmt: skip


def migrate(target: str) -> None:
    call_command("migrate", "usage", target, verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_a_populated_events_table_is_partitioned_and_keeps_every_event_once():
    workspace = workspace_create(slug="legacy", owner_email="legacy@test.example")
    api_key = api_key_create(workspace=workspace, name="k").api_key
    migrate("0005")
    try:
        bodies = [event(occurred_at=arrival.isoformat()) for arrival in ARRIVALS]
        for body, arrival in zip(bodies, ARRIVALS, strict=True):
            # The code of this checkout writes receipts; the table at 0005 has none: write as 0005 did.
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO usage_usageevent (workspace_id, api_key_id, event_id, occurred_at, received_at, "
                    "feature, model, steps, width, height, composition_control, spot, quantity, metadata, unit_price, "
                    "amount, price_book_id, content_hash) SELECT %s, %s, %s, %s, %s, 'generation', 'sd15', 30, 512, "
                    "512, false, false, 1, '{}', 0.004, 0.004, id, %s FROM billing_pricebook LIMIT 1",
                    [workspace.pk, api_key.pk, body["event_id"], arrival, arrival, _hash(body)],
                )
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(id) FROM usage_usageevent")
            last_id = cursor.fetchone()[0]
    finally:
        migrate("0006")

    assert UsageEvent.objects.count() == 3
    assert EventReceipt.objects.filter(workspace=workspace).count() == 3
    if on_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT tableoid::regclass::text FROM usage_usageevent ORDER BY id")
            assert [row[0] for row in cursor.fetchall()] == [
                "usage_usageevent_2025_12", "usage_usageevent_2026_01", "usage_usageevent_2026_03"]
    # Ingestion carries on after the last id, and an event the old table held is a duplicate.
    new = events_ingest(workspace=workspace, api_key=api_key, raw_events=[event()], now=datetime(2026, 11, 25, tzinfo=UTC))
    assert new.results[0].status == "accepted"
    assert UsageEvent.objects.get(event_id=new.results[0].event_id).pk > last_id
    again = events_ingest(workspace=workspace, api_key=api_key, raw_events=[bodies[0]], now=datetime(2026, 11, 25, tzinfo=UTC))
    assert again.results[0].status == "duplicate"
    assert UsageEvent.objects.filter(event_id=bodies[0]["event_id"]).count() == 1

    # Back to one table, with the unique index; and forward again, as the rest of the suite expects.
    migrate("0005")
    try:
        assert UsageEvent.objects.count() == 4
        if on_postgres():
            with connection.cursor() as cursor:
                cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'usage_usageevent'")
                assert cursor.fetchone()[0] == "r"
                cursor.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'usageevent_unique_event_id'")
                assert cursor.fetchone()[0] == 1
    finally:
        migrate("0006")
    assert UsageEvent.objects.count() == 4


def _hash(body: dict) -> str:
    from usage.validation import parse_event

    parsed, errors = parse_event(body, now=datetime(2026, 11, 25, tzinfo=UTC))
    assert not errors
    return parsed.content_hash
