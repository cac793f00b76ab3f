"""Event receipts past the exactly-once window (EVENT_RECEIPT_DAYS, at least 400) are deleted."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import EventReceipt

MINIMUM_DAYS = 400
_BATCH = 10_000


def window() -> timedelta:
    return timedelta(days=max(MINIMUM_DAYS, settings.EVENT_RECEIPT_DAYS))


def prune(*, now: datetime | None = None) -> int:
    """Delete the receipts received more than `window()` ago, a batch per transaction so that a
    large backlog never holds locks for long. Returns how many went. An event id older than the
    window, sent again, would be stored as new: the window is the documented promise."""
    before = (now or timezone.now()) - window()
    table = EventReceipt._meta.db_table
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # (workspace_id, event_id) is the key; SQLite and PostgreSQL both take row values.
            cursor.execute(
                f"DELETE FROM {table} WHERE (workspace_id, event_id) IN (SELECT workspace_id, event_id "
                f"FROM {table} WHERE received_at < %s LIMIT {_BATCH})",
                [before],
            )
            count = cursor.rowcount
        deleted += count
        if count < _BATCH:
            return deleted
