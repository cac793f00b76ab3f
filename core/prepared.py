"""Statements PREPAREd once per PostgreSQL connection, for hot paths that run one statement per
request (ingestion: usage.services).

PostgreSQL plans a statement each time it is sent. Ingestion's statement (the events and their
rollups, one CTE) took 0.18 ms to plan and 0.17 ms to run for one event (EXPLAIN ANALYZE, issue
12): a prepared statement is planned once per connection and then only run. It is prepared on the
first use on each connection and kept by the server until the connection closes; PREPARE is not
transactional (a rolled-back transaction keeps it), so the record of where it is prepared stays
true. Should it be gone anyway (a pooler that resets connections, `DEALLOCATE ALL`), the call
prepares it again and retries once, when no transaction is open.

`DATABASE_PREPARED_STATEMENTS=0` sends the plain statement instead: behind a pooler in transaction
mode (PgBouncer's `pool_mode = transaction`) consecutive transactions may run on different server
connections, where a statement prepared on another one does not exist. Other databases (SQLite)
always get the plain statement.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import ProgrammingError, connection

_PARAMETER = re.compile(r"%\((\w+)\)s")
_MISSING = "26000"  # invalid_sql_statement_name: no prepared statement of that name here


class PreparedStatement:
    """`sql` with named parameters (`%(name)s`), each given a PostgreSQL type in `types`."""

    def __init__(self, name: str, sql: str, types: Mapping[str, str]):
        names = list(dict.fromkeys(_PARAMETER.findall(sql)))
        if set(names) != set(types):
            raise ValueError(f"{name}: parameters {sorted(names)} but types for {sorted(types)}")
        numbered = _PARAMETER.sub(lambda match: f"${names.index(match.group(1)) + 1}", sql)
        self.name = name
        self.sql = sql
        self.prepare_sql = f"PREPARE {name} ({', '.join(types[n] for n in names)}) AS {numbered}"
        self.execute_sql = f"EXECUTE {name} ({', '.join(f'%({n})s' for n in names)})"
        self._prepared_on: weakref.WeakSet = weakref.WeakSet()  # the driver's connections

    def execute(self, cursor, params: Mapping[str, Any]) -> None:
        """Run on `cursor` (of django.db.connection): prepared on PostgreSQL unless turned off."""
        if connection.vendor != "postgresql" or not getattr(settings, "DATABASE_PREPARED_STATEMENTS", True):
            cursor.execute(self.sql, params)
            return
        raw = connection.connection  # open: the cursor made it so
        if raw not in self._prepared_on:
            self._prepare(cursor, raw)
        try:
            cursor.execute(self.execute_sql, params)
        except ProgrammingError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != _MISSING or connection.in_atomic_block:
                raise
            self._prepared_on.discard(raw)
            self._prepare(cursor, raw)
            cursor.execute(self.execute_sql, params)

    def _prepare(self, cursor, raw) -> None:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = %s)", [self.name]
        )
        if not cursor.fetchone()[0]:
            cursor.execute(self.prepare_sql)
        self._prepared_on.add(raw)
