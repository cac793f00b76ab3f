"""The events table's monthly partitions on PostgreSQL (issue 13): made ahead, archived behind.

`usage_usageevent` is partitioned by RANGE of `received_at`, one partition per UTC month
(`usage_usageevent_2026_11`), plus a DEFAULT partition that only catches what nothing else takes
(rows loaded by hand for a month without a partition yet). Why arrival and not occurrence:
ingestion stamps `received_at` with the present, so it writes into one partition, the current one;
and a month closes by arrival (its statements bill what arrived by their cutoff), so once its close
ran a past month's partition holds billed events only and never receives another: it can be
exported and detached whole (`archive`), which a partition by occurrence could never promise (a
late event can occur in any month). Reads by occurrence skip the earlier months all the same,
through `usage.models.received_since`.

`ensure` runs in the migration, daily from beat and before an archive: it makes the current month's
partition and AHEAD more, and one for every month that rows in the DEFAULT partition belong to
(moving those rows in). Several beats or nodes may run it at once: an advisory lock serialises them.
SQLite (the embedded default) keeps one table; there `ensure` does nothing and `archive` deletes the
month's rows after exporting them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable
from datetime import date, datetime, timezone
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone as dj_timezone

from core.errors import ServiceError
from core.periods import month_start, next_month
from core.periods import period_bounds as bounds

from .models import ArchivedMonth, UsageEvent

PARENT = "usage_usageevent"
DEFAULT = "usage_usageevent_default"
AHEAD = 2  # months made ahead of the current one: a beat that stops for weeks loses nothing
LOCK_TIMEOUT_SECONDS = 5
_LOCK = 0x6D625F70  # pg_advisory_xact_lock key of partition changes ("mb_p")


class ArchiveRefused(ServiceError):
    """The month cannot be archived (yet): the message says why and what to do."""


def name_of(month: date) -> str:
    return f"{PARENT}_{month:%Y_%m}"


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [PARENT])
        row = cursor.fetchone()
    return bool(row) and row[0] == "p"


def partitions() -> dict[date, str]:
    """The monthly partitions attached now, by month."""
    if not is_partitioned():
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        names = [row[0] for row in cursor.fetchall()]
    found = {}
    for name in names:
        suffix = name.removeprefix(PARENT + "_")
        if suffix != name and suffix != "default":
            year, month = suffix.split("_")
            found[date(int(year), int(month), 1)] = name
    return found


def ensure(*, now: datetime | None = None, ahead: int = AHEAD, extra: Iterable[date] = ()) -> list[date]:
    """Make the partitions that should exist and do not (and those of `extra` months); returns the
    months made."""
    if not is_partitioned():
        return []
    current = month_start((now or dj_timezone.now()).astimezone(timezone.utc).date())
    made = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        # Behind a long query on the DEFAULT partition, give up rather than queue others behind
        # us: the next run retries, with two months to spare. (Put back after: SET LOCAL would
        # last to the end of a caller's transaction, the migration's or the archive's.)
        cursor.execute("SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
                       [f"{LOCK_TIMEOUT_SECONDS}s"])  # fmt: skip
        before = cursor.fetchone()[0]
        existing = set(partitions())
        wanted = [current]
        for _ in range(ahead):
            wanted.append(next_month(wanted[-1]))
        cursor.execute(
            f"SELECT DISTINCT date_trunc('month', received_at AT TIME ZONE 'UTC')::date FROM {DEFAULT}"
        )
        wanted += [row[0] for row in cursor.fetchall()] + [month_start(month) for month in extra]
        for month in sorted(set(wanted) - existing):
            _create(cursor, month)
            made.append(month)
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [before])
    return made


def _create(cursor, month: date) -> None:
    """Create `month`'s partition as a table of its own, move in the DEFAULT partition's rows of
    that month (PostgreSQL refuses a partition whose rows sit in the DEFAULT one), and attach it.
    Not `CREATE TABLE … PARTITION OF`, which locks the whole events table ACCESS EXCLUSIVE: ATTACH
    takes SHARE UPDATE EXCLUSIVE, which ingestion's inserts and every read go on beside (only the
    DEFAULT partition, which nothing routine touches, is locked exclusively, to check it)."""
    start, end = bounds(month)
    table = name_of(month)
    window = f"received_at >= '{start.isoformat()}' AND received_at < '{end.isoformat()}'"
    cursor.execute(f"CREATE TABLE {table} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    # Said beforehand, the bounds spare ATTACH a scan of the new table to prove them.
    cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_bounds CHECK ({window})")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE {window} RETURNING *) INSERT INTO {table} SELECT * FROM moved"
    )
    cursor.execute(
        f"ALTER TABLE {PARENT} ATTACH PARTITION {table} FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )
    cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_bounds")


def archived_arrivals(since: datetime | None, until: datetime) -> list[ArchivedMonth]:
    """The archived months whose arrivals overlap [since, until] (`since` None: from the start)."""
    months = ArchivedMonth.objects.filter(month__lte=month_start(until.astimezone(timezone.utc).date()))
    if since is not None:
        months = months.filter(month__gte=month_start(since.astimezone(timezone.utc).date()))
    return list(months.order_by("month"))


def partitions_in_plan(sql: str, *, analyze: bool = False) -> dict[str, int]:
    """The events tables (its partitions; the table itself where not partitioned) a SELECT's plan reads,
    each with its rows. Plain EXPLAIN (the query is not run): every partition in the plan, with the
    rows it is estimated to return. analyze=True runs the query (EXPLAIN ANALYZE): the partitions
    the executor actually scanned (a node never executed, pruned at run time, is left out), each
    with the rows it read, those returned plus those its filters removed, over all loops."""
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN ({options}) " + sql)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    found: dict[str, int] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            name = node.get("Relation Name", "")
            if name.startswith(PARENT):
                if not analyze:
                    found[name] = found.get(name, 0) + int(node.get("Plan Rows", 0))
                elif node.get("Actual Loops", 0):
                    per_loop = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                                + node.get("Rows Removed by Index Recheck", 0))
                    found[name] = found.get(name, 0) + round(per_loop * node["Actual Loops"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return found


# --- Archive --------------------------------------------------------------------------------------

_COLUMNS = [field.column for field in UsageEvent._meta.concrete_fields]


def export_and_remove(
    month: date,
    *,
    directory: Path | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArchivedMonth:
    """Export the events that arrived in `month` to `<directory>/usage-events-YYYY-MM.csv.gz`
    (CSV with a header, the table's columns, readable by `COPY … FROM STDIN CSV HEADER`) and remove
    them from the database: the partition is detached and dropped on PostgreSQL, the rows deleted on
    SQLite. Rollups, statements and event receipts stay. Refused for a month not over or one
    archived already. Whether the month is billed is billing's to say: billing.retention checks it
    and locks the workspaces first, in the transaction this runs in."""
    now = now or dj_timezone.now()
    month = month_start(month)
    if bounds(month)[1] > now:
        raise ArchiveRefused(f"{month:%Y-%m} is not over yet: only past months can be archived.")
    done = ArchivedMonth.objects.filter(month=month).first()
    if done is not None:
        raise ArchiveRefused(f"{month:%Y-%m} is archived already ({done.path}).")
    ensure(now=now)  # moves any of the month's rows out of the DEFAULT partition
    directory = Path(directory or settings.USAGE_ARCHIVE_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"usage-events-{month:%Y-%m}.csv.gz"
    start, end = bounds(month)
    table = partitions().get(month)
    with transaction.atomic():
        if table:
            # No one can write into a past month's partition (arrival is now), but a reader must not
            # see it half gone: the lock waits for running reads and holds new ones to the drop.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")
        events = UsageEvent.objects.filter(received_at__gte=start, received_at__lt=end)
        total = events.count()
        rows, digest = _export(events, table, path, total, progress)
        if rows != total:
            path.unlink(missing_ok=True)
            raise ArchiveRefused(f"Exported {rows} rows of {total}; nothing was removed. Try again.")
        record = ArchivedMonth.objects.create(month=month, path=str(path), rows=rows, sha256=digest, archived_at=now)
        if table:
            with connection.cursor() as cursor:
                # DETACH locks the events table ACCESS EXCLUSIVE (its CONCURRENTLY form cannot run
                # in a transaction): wait at most this long, rather than stall ingestion queued
                # behind a long read. Refused, nothing is removed: run it again.
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'")
                try:
                    with transaction.atomic():
                        cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {table}")
                except OperationalError as exc:
                    raise ArchiveRefused(
                        f"Could not lock the events table within {LOCK_TIMEOUT_SECONDS} s to detach {table} "
                        f"({exc.__class__.__name__}: a long query is reading it); nothing was removed. Run it again."
                    ) from exc
                cursor.execute(f"DROP TABLE {table}")
        else:
            events._raw_delete(events.db)
    return record


def _export(events, table: str | None, path: Path, total: int, progress) -> tuple[int, str]:
    """Write the rows, gzip, to a temporary file made durable and then renamed: a crash leaves
    either no file or a whole one. Returns (rows written, sha256 of the file)."""
    partial = path.with_name(path.name + ".partial")
    rows = lines = reported = 0
    with _Hashing(open(partial, "wb")) as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
            if table:
                # COPY streams the partition as PostgreSQL writes CSV (jsonb stays one line).
                with connection.cursor() as cursor:
                    copy_sql = f"COPY (SELECT {', '.join(_COLUMNS)} FROM {table} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
                    with cursor.cursor.copy(copy_sql) as copy:
                        for block in copy:
                            zipped.write(block)
                            lines += bytes(block).count(b"\n")  # about a row each: for progress only
                            if progress and lines >= reported + 100_000:
                                reported = lines
                                progress(min(lines, total), total)
                    rows = cursor.cursor.rowcount  # PostgreSQL's own count ("COPY n")
                if progress:
                    progress(rows, total)
            else:
                text = io.TextIOWrapper(zipped, encoding="utf-8", newline="")
                writer = csv.writer(text, lineterminator="\n")
                writer.writerow(_COLUMNS)
                fields = [field.attname for field in UsageEvent._meta.concrete_fields]
                for values in events.order_by("id").values_list(*fields).iterator(chunk_size=5_000):
                    writer.writerow(_csv_value(value) for value in values)
                    rows += 1
                    if progress and rows % 100_000 == 0:
                        progress(rows, total)
                text.flush()
                text.detach()
                if progress:
                    progress(rows, total)
        raw.sync()
    os.replace(partial, path)
    return rows, raw.digest.hexdigest()


class _Hashing(io.RawIOBase):
    """A file that hashes what is written to it, so that a large archive is read once."""

    def __init__(self, file):
        self.file, self.digest = file, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        if not self.closed:
            self.file.close()
        super().close()


def _csv_value(value):
    if isinstance(value, dict):
        return json.dumps(value, separators=(", ", ": "))
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(sep=" ")
    return "" if value is None else value
