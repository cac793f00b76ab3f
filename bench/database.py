"""The benchmark's database: which one, its creation and migration, counts, cleanup, and the
PostgreSQL COPY ceiling.

Functions below `django_setup` use Django's ORM and connection; call `django_setup` first (after
the environment holds the bench's DATABASE_URL)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/meterboard_bench"
# The development and test databases: a benchmark never writes there.
PROTECTED_DATABASES = frozenset({"meterboard", "test_meterboard"})


class DatabaseError(RuntimeError):
    pass


@dataclass
class Target:
    url: str
    vendor: str  # "postgresql" or "sqlite"
    name: str
    note: str = ""  # how it was chosen (shown in the header)


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def masked(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _vendor(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme.startswith("postgres") or scheme == "pgsql":
        return "postgresql"
    if scheme.startswith("sqlite"):
        return "sqlite"
    return scheme


def _admin_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(_admin_url(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _ensure_postgres_database(url: str, *, fresh: bool = False) -> bool:
    """Create the database if missing (dropped first when `fresh`); True when it was created."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    if name in PROTECTED_DATABASES:  # belt and braces: only ever the bench's own database
        raise DatabaseError(f"Refusing to create or drop {name!r}.")
    with psycopg.connect(_admin_url(url), connect_timeout=5, autocommit=True) as admin:
        if fresh:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def choose(environ_url: str | None, var_dir: Path, *, fresh: bool = False) -> Target:
    """DATABASE_URL when set; else meterboard_bench on the local PostgreSQL when it answers
    (created if missing; dropped and created again when `fresh`); else a SQLite file under
    var/bench/ (deleted first when `fresh`)."""
    if environ_url:
        if fresh:
            raise DatabaseError(
                "--fresh-db only drops the bench's own database: unset DATABASE_URL to use it."
            )
        target = Target(environ_url, _vendor(environ_url), database_name(environ_url), "from DATABASE_URL")
    elif _postgres_answers(DEFAULT_POSTGRES_URL):
        created = _ensure_postgres_database(DEFAULT_POSTGRES_URL, fresh=fresh)
        note = "local PostgreSQL, database created" if created else "local PostgreSQL"
        target = Target(DEFAULT_POSTGRES_URL, "postgresql", database_name(DEFAULT_POSTGRES_URL), note)
    else:
        path = var_dir / "bench.sqlite3"
        if fresh:
            for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
        target = Target(
            f"sqlite:///{path}", "sqlite", str(path), "PostgreSQL does not answer at 127.0.0.1:5432"
        )
    if target.vendor == "postgresql" and target.name in PROTECTED_DATABASES:
        raise DatabaseError(
            f"Refusing to benchmark on the database {target.name!r} (development/test data). Point "
            f"DATABASE_URL at a scratch database, or unset it to use {database_name(DEFAULT_POSTGRES_URL)}."
        )
    if target.vendor not in ("postgresql", "sqlite"):
        raise DatabaseError(f"Unsupported database in DATABASE_URL: {masked(target.url)}")
    return target


def manage(base_dir: Path, env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run manage.py with the bench environment; its stdout, or DatabaseError with its output."""
    result = subprocess.run(
        [sys.executable, str(base_dir / "manage.py"), *args],
        cwd=base_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise DatabaseError(f"manage.py {' '.join(args)} failed:\n" + "\n".join(output[-25:]))
    return result.stdout


def django_setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def close_connections() -> None:
    from django.db import connections

    connections.close_all()


def workspace_ids(slug: str) -> tuple[int, int]:
    """(workspace id, id of its newest API key)."""
    from workspaces.models import ApiKey, Workspace

    workspace = Workspace.objects.get(slug=slug)
    key = ApiKey.objects.filter(workspace=workspace).order_by("-created_at", "-pk").first()
    if key is None:
        raise DatabaseError(f"Workspace {slug} has no API key.")
    return workspace.pk, key.pk


def stored_counts(workspace_id: int, prefixes: tuple[str, ...]) -> dict[str, int]:
    """Events stored in the workspace: in total, per event_id prefix, and as summed by its rollups."""
    from django.db.models import Sum

    from usage.models import DailyRollup, UsageEvent

    events = UsageEvent.objects.filter(workspace_id=workspace_id)
    counts = {prefix: events.filter(event_id__startswith=prefix).count() for prefix in prefixes}
    counts["total"] = events.count()
    rollups = DailyRollup.objects.filter(workspace_id=workspace_id).aggregate(events=Sum("events"))
    counts["rollups"] = rollups["events"] or 0
    return counts


def cleanup(workspace_id: int) -> None:
    """Delete the run's events, rollups, keys and workspace (the bench owner user stays, reused)."""
    from django.db import transaction

    from usage.models import DailyRollup, UsageEvent
    from workspaces.models import Workspace

    with transaction.atomic():
        UsageEvent.objects.filter(workspace_id=workspace_id).delete()
        DailyRollup.objects.filter(workspace_id=workspace_id).delete()
        Workspace.objects.filter(pk=workspace_id).delete()


@dataclass
class CopyRun:
    rows: int
    elapsed: float
    indexes: int
    foreign_keys: int
    source_rows: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed if self.elapsed else 0.0


def _drop_orphaned_scratch_tables(cursor) -> None:
    """Scratch tables left by a bench that was killed (its process is gone)."""
    cursor.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'bench\\_copy\\_ceiling\\_%%'")
    for (name,) in cursor.fetchall():
        pid = name.rsplit("_", 1)[-1]
        if pid.isdigit() and Path("/proc/self").exists() and not Path(f"/proc/{pid}").exists():
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')


def copy_ceiling(workspace_id: int, rows: int) -> CopyRun:
    """COPY `rows` rows, made from the events this run stored, into a scratch table built like
    usage_usageevent (same columns, defaults, checks and indexes; the same foreign keys, added
    after the LIKE, which does not copy them). An ordinary (WAL-logged) table, not a TEMP one,
    so that it costs what the real table costs. Timed: the COPY and its commit, with the payload
    built beforehand, so the client adds next to nothing. The scratch table is dropped after."""
    from django.db import connection, transaction

    from usage.models import UsageEvent

    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    scratch = f"bench_copy_ceiling_{os.getpid()}"
    columns = [field.column for field in UsageEvent._meta.concrete_fields if not field.primary_key]
    column_list = ", ".join(connection.ops.quote_name(column) for column in columns)
    # The same rows again and again, each repeat with its own event_id suffix (unique index).
    selected = ", ".join(
        "e.event_id || '-r' || g" if column == "event_id" else f"e.{connection.ops.quote_name(column)}"
        for column in columns
    )
    try:
        with connection.cursor() as cursor:
            _drop_orphaned_scratch_tables(cursor)
            cursor.execute(f"DROP TABLE IF EXISTS {scratch}")
            cursor.execute(f"CREATE TABLE {scratch} (LIKE {table} INCLUDING ALL)")
            cursor.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                "AND contype = 'f' ORDER BY conname",
                [UsageEvent._meta.db_table],
            )
            foreign_keys = [row[0] for row in cursor.fetchall()]
            for number, definition in enumerate(foreign_keys):
                cursor.execute(f"ALTER TABLE {scratch} ADD CONSTRAINT {scratch}_fk{number} {definition}")
            cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [scratch])
            indexes = cursor.fetchone()[0]
            cursor.execute(f"SELECT count(*) FROM {table} WHERE workspace_id = %s", [workspace_id])
            source_rows = cursor.fetchone()[0]
            if not source_rows:
                raise DatabaseError("no events stored by this run to copy")
            repeats = math.ceil(rows / source_rows)
            payload = bytearray()
            with cursor.cursor.copy(
                f"COPY (SELECT {selected} FROM {table} AS e CROSS JOIN generate_series(1, {repeats}) AS g "
                f"WHERE e.workspace_id = {int(workspace_id)} ORDER BY g, e.id LIMIT {int(rows)}) TO STDOUT"
            ) as copy:
                for chunk in copy:
                    payload += chunk
        chunk_size = 1 << 20
        started = time.perf_counter()
        with transaction.atomic():
            with connection.cursor() as cursor:
                with cursor.cursor.copy(f"COPY {scratch} ({column_list}) FROM STDIN") as copy:
                    for start in range(0, len(payload), chunk_size):
                        copy.write(payload[start : start + chunk_size])
        elapsed = time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {scratch}")
            copied = cursor.fetchone()[0]
        return CopyRun(copied, elapsed, indexes, len(foreign_keys), source_rows)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {scratch}")
