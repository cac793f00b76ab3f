"""The events table carries only the indexes its readers use (issue 12): every index costs every
insert. Exactly-once is the receipts' primary key (issue 13: a partitioned table cannot hold a unique
index over all months). The reads that matter still find an index (checked with EXPLAIN, sequential scans off so
that a tiny test table cannot hide a missing index)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from django.db import connection

from usage.models import EventReceipt, UsageEvent

pytestmark = pytest.mark.django_db

WANTED = {
    "usage_usageevent_pkey",
    "usageevent_ws_occurred",  # (workspace, occurred_at): the close, pages, exports
    "usageevent_ws_received",  # (workspace, received_at): the close's cutoff, late usage
}


def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("index names and EXPLAIN are checked on PostgreSQL, where the targets are")


def test_the_events_table_has_no_redundant_index():
    postgres_only()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_usageevent'")
        found = dict(cursor.fetchall())
    price_book = [name for name, definition in found.items() if "(price_book_id)" in definition]
    assert len(price_book) == 1, "the price book's index serves the admin's in-use check and PROTECT"
    assert set(found) - set(price_book) == WANTED, found


@pytest.mark.parametrize("query", ["events_page", "late_usage", "one_event"])
def test_the_reads_that_matter_use_an_index(workspace, query):
    postgres_only()
    moment = datetime(2026, 11, 1, tzinfo=timezone.utc)
    events = UsageEvent.objects.filter(workspace=workspace)
    queryset = {
        "events_page": events.filter(occurred_at__lt=moment).order_by("-occurred_at", "-pk")[:50],
        "late_usage": events.filter(received_at__gt=moment, occurred_at__lt=moment),
        "one_event": EventReceipt.objects.filter(workspace=workspace, event_id="evt-1"),
    }[query]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = queryset.explain()
    assert "Index" in plan and "Seq Scan" not in plan, plan
