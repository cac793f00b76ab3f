"""Per-workspace locks held until the transaction ends."""

from __future__ import annotations

from django.db import connection


def workspace_lock(lock_class: int, workspace_id: int) -> None:
    """Serialize, until the transaction ends, the callers of one workspace and lock class. On
    PostgreSQL an advisory lock (nothing else waits on it); SQLite's write transactions (IMMEDIATE,
    config/settings.py) are serialized already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [lock_class, workspace_id % 2**31])
