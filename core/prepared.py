"""Statements prepared once per PostgreSQL connection, for hot paths that run one statement per
request (ingestion: usage.services).

PostgreSQL plans a statement each time it is sent. Ingestion's statement (the events and their
rollups, one CTE) took 0.18 ms to plan and 0.17 ms to run for one event (EXPLAIN ANALYZE, issue
12). `PreparedStatement.fetchall` sends it with psycopg's server-side binding and `prepare=True`:
prepared by the protocol on a connection's first use, then only run; its parameters travel
apart from the text, so nothing quotes or parses a batch's 200 kB of arrays on the client.
(psycopg drops its prepared statements at every rollback on the connection, to be safe; the next
call prepares again.) Should the server have lost it behind psycopg's back (a pooler that resets
connections), the call forgets psycopg's record and retries once, when no transaction is open.

Poolers: PgBouncer 1.21 and later keeps protocol-level prepared statements across transaction
pooling when `max_prepared_statements` is set; with an older one, or another pooler in
transaction mode, set `DATABASE_PREPARED_STATEMENTS=0` and the plain statement is sent through
Django's cursor. Other databases (SQLite) always get that.

Errors are Django's (`connection.wrap_database_errors`), and the statement shows in Django's query
log as any other (tests count it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import connection

_ONLY_WHEN_ASKED = 2**31 - 1


def enabled() -> bool:
    return connection.vendor == "postgresql" and getattr(settings, "DATABASE_PREPARED_STATEMENTS", True)


class PreparedStatement:
    """`sql` with named parameters (`%(name)s`)."""

    def __init__(self, sql: str):
        self.sql = sql

    def fetchall(self, params: Mapping[str, Any]) -> list[tuple]:
        if not enabled():
            with connection.cursor() as cursor:
                cursor.execute(self.sql, params)
                return cursor.fetchall()
        import psycopg

        connection.ensure_connection()
        started = time.monotonic()
        with connection.wrap_database_errors:
            try:
                return self._run(psycopg, params)
            except psycopg.errors.InvalidSqlStatementName:
                if connection.in_atomic_block:
                    raise
                # Forget psycopg's record of what the server holds; the DEALLOCATE ALL that
                # psycopg queues for that runs after the next statement, so let a trivial one
                # carry it before this one is prepared again.
                connection.connection._prepared.clear()
                with psycopg.Cursor(connection.connection) as cursor:
                    cursor.execute("SELECT 1", prepare=False)
                return self._run(psycopg, params)
            finally:
                if connection.queries_logged:
                    connection.queries_log.append(
                        {"sql": self.sql, "time": f"{time.monotonic() - started:.3f}"}
                    )

    def _run(self, psycopg, params) -> list[tuple]:
        raw = connection.connection
        if raw.prepare_threshold is None:
            # Django turns psycopg's preparing off for every statement (poolers); this lets an
            # explicit prepare=True through and nothing else: Django's own cursors bind on the
            # client, which never prepares, and no count reaches this threshold.
            raw.prepare_threshold = _ONLY_WHEN_ASKED
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(self.sql, params, prepare=True)
            return cursor.fetchall()
