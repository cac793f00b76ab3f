"""The dashboard overview's server time for a workspace with 20 thousand and with 2 million events
in the current month: `python -m bench overview` (options: --help). Target: <= 150 ms at 2 million.

The overview reads only daily rollups, so its time should not grow with the number of events;
the two sizes side by side show it. Steps, for each size:

  1. dataset   a workspace `overview-bench-<N>` (owner, 3 API keys, a budget, last month's
               statement) with N priced usage events spread over this UTC month so far, written with
               PostgreSQL COPY (SQLite: batched INSERTs; bench/data.py), and their daily rollups with
               one INSERT … SELECT … GROUP BY, as ingestion would keep them. Reused when its counts
               match.
  2. measure   GET /?period=this_month and GET /?period=last_12 through Django's full stack in
               this process (middleware, session, selectors, templates): warm-up, then --repeat
               timed requests each; median and p95, and the number of SQL queries. The period is
               always named: the overview remembers the owner's last one (the first warm-up
               request stores it; the timed ones write nothing).

The database is bench/environment.py's choice: DATABASE_URL, else `meterboard_bench` on the local
PostgreSQL, else a SQLite file (figures that say little about PostgreSQL). It never touches
`meterboard` or `test_meterboard`. --cleanup deletes the bench workspaces.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from core.periods import current_period, previous_month

from . import cpu, environment, workspaces
from .data import build_rollups, overview_rows, write_rows
from .report import say, table

THIS_MONTH, LAST_12 = "/?period=this_month", "/?period=last_12"  # the overviews timed
HELP = "the dashboard overview's server time at 20 thousand and 2 million events this month"
EPILOG = "Quick run: python -m bench overview --sizes 2000,20000 --repeat 5 --cleanup"
TARGET_MS = 150
SIZES = (20_000, 2_000_000)
SLUG_PREFIX = "overview-bench-"
OWNER_EMAIL = "overview-bench@example.com"
KEY_NAMES = ("Production generators", "Batch jobs", "Analytics")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES),
                        help="events in the month, comma-separated (default 20000,2000000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per page and size (default 20)")
    parser.add_argument("--regenerate", action="store_true", help="generate the datasets again")
    parser.add_argument("--cleanup", action="store_true", help="delete the bench workspaces at the end")
    parser.add_argument("--seed", type=int, default=1)  # fmt: skip


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        args.sizes = [int(n.replace("_", "")) for n in args.sizes.split(",") if n.strip()]
    except ValueError:
        parser.error("--sizes: whole numbers, e.g. 20000,2000000")
    if not args.sizes or min(args.sizes) < 1 or args.repeat < 1:
        parser.error("--sizes and --repeat must be at least 1")


# --- The dataset --------------------------------------------------------------------------------


@dataclass
class Dataset:
    slug: str
    workspace_id: int
    owner_id: int
    events: int
    rollup_rows: int
    seconds: float  # to generate (0 when reused)


def _counts(workspace_id: int, month: date) -> tuple[int, int, int]:
    from django.db.models import Count, Sum

    from usage.models import DailyRollup, UsageEvent

    events = UsageEvent.objects.filter(workspace_id=workspace_id).count()
    rollups = DailyRollup.objects.filter(workspace_id=workspace_id, day__gte=month).aggregate(rows=Count("pk"), events=Sum("events"))
    return events, int(rollups["rows"] or 0), int(rollups["events"] or 0)


def _extras(workspace_id: int, keys: list[int], now: datetime) -> None:
    """A workspace budget, a key budget and last month's statement: the overview shows them all."""
    from billing.models import Statement, StatementLine
    from billing.selectors import default_plan
    from budgets.models import Budget

    if not Budget.objects.filter(workspace_id=workspace_id).exists():
        Budget.objects.create(workspace_id=workspace_id, amount=Decimal(50_000), hard_limit=False)
        Budget.objects.create(workspace_id=workspace_id, api_key_id=keys[0], amount=Decimal(30_000), hard_limit=True)
    period = previous_month(current_period(now))
    if not Statement.objects.filter(workspace_id=workspace_id, period=period).exists():
        statement = Statement.objects.create(
            workspace_id=workspace_id, period=period, status=Statement.Status.PAID, plan=default_plan(),
            total=Decimal("1234.500000"), amount_due_cents=123450, finalized_at=now, paid_at=now,
        )  # fmt: skip
        StatementLine.objects.create(statement=statement, position=1, kind="usage", description="Image generation",
                                     quantity=1, unit_price=Decimal("1235.0"), amount=Decimal("1235.0"))  # fmt: skip
        StatementLine.objects.create(statement=statement, position=2, kind="free_tier", description="Monthly free tier",
                                     quantity=1, unit_price=Decimal("-0.5"), amount=Decimal("-0.5"))  # fmt: skip


def dataset(vendor: str, size: int, *, now: datetime, regenerate: bool, seed: int) -> Dataset:
    from django.contrib.auth import get_user_model
    from django.db import connection

    name = f"Overview bench ({size} events)"
    slug = f"{SLUG_PREFIX}{size}"
    month = now.date().replace(day=1)
    workspace_id, owner_id, keys = workspaces.with_keys(slug, OWNER_EMAIL, name, KEY_NAMES)
    events, rollup_rows, rollup_events = _counts(workspace_id, month)
    if not regenerate and events == size and rollup_events == size:
        _extras(workspace_id, keys, now)
        return Dataset(slug, workspace_id, owner_id, events, rollup_rows, 0.0)
    if events:
        say(f"    deleting {events:,} events of an earlier run")
        workspaces.delete(workspace_id)
        workspace_id, owner_id, keys = workspaces.with_keys(slug, OWNER_EMAIL, name, KEY_NAMES)
    started = time.monotonic()
    write_rows(vendor, overview_rows(size, workspace_id, keys, now, seed), size)
    say("    rollups: INSERT … SELECT … GROUP BY", end="")
    build_rollups(vendor, workspace_id, workspace_id)
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE usage_dailyrollup")
    _extras(workspace_id, keys, now)
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE usage_usageevent")
    events, rollup_rows, rollup_events = _counts(workspace_id, month)
    say(f" → {rollup_rows:,} rows")
    if events != size or rollup_events != size:
        raise RuntimeError(f"{slug}: {events:,} events and {rollup_events:,} in rollups, expected {size:,}")
    owner = get_user_model().objects.get(pk=owner_id)
    return Dataset(slug, workspace_id, owner.pk, events, rollup_rows, time.monotonic() - started)


# --- Measuring ----------------------------------------------------------------------------------


@dataclass
class Timing:
    size: int
    page: str
    median_ms: float
    p95_ms: float
    best_ms: float
    queries: int
    rollup_rows: int


def measure(data: Dataset, path: str, repeat: int) -> Timing:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(pk=data.owner_id))
    url = f"{path}{'&' if '?' in path else '?'}workspace={data.slug}"
    for _ in range(3):  # warm-up: imports, template cache, the database's buffers
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        client.get(url)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return Timing(data.events, path, statistics.median(times), p95, times[0], queries, data.rollup_rows)


def production_pages():
    """The settings the pages are timed under: production's (DEBUG off), except that static files
    need no collectstatic manifest here."""
    from django.test.utils import override_settings

    storages = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # fmt: skip
    return override_settings(STORAGES=storages, DEBUG=False)


def summary(vendor: str, timings: list[Timing]) -> str:
    rows = [(f"overview server time on {vendor} ({cpu.cores()} cores)", "median", "p95", "best", "queries", "rollup rows", "")]
    for t in timings:
        verdict = ""
        if t.page == THIS_MONTH and t.size >= 2_000_000:
            verdict = f"{'ok' if t.median_ms <= TARGET_MS else 'MISSED'} (target <= {TARGET_MS} ms)"
        label = f"{t.size:,} events, {'this month' if t.page == THIS_MONTH else 'last 12 months'}"
        rows.append((label, f"{t.median_ms:.1f} ms", f"{t.p95_ms:.1f} ms", f"{t.best_ms:.1f} ms", str(t.queries), f"{t.rollup_rows:,}", verdict))
    lines = table(rows, [max(len(row[i]) for row in rows) + 2 for i in range(6)])
    month_rows = [t for t in timings if t.page == THIS_MONTH]
    if len(month_rows) >= 2:
        small, large = month_rows[0], month_rows[-1]
        lines.append(
            f"{large.size:,} / {small.size:,} events: {large.size / small.size:,.0f}× the events, "
            f"{large.median_ms / small.median_ms:.2f}× the time (the overview reads rollups, not events)"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        bench = environment.select()
    except environment.DatabaseError as exc:
        say(f"overview bench: {exc}")
        return 2
    say(f"Overview bench on {bench.vendor} ({environment.masked(bench.target.url)}; {bench.target.note})")
    say("[1/2] database   migrate")
    bench.migrate()
    bench.activate()

    from django.utils import timezone

    now = timezone.now().astimezone(UTC)
    datasets = []
    for size in sorted(args.sizes):
        say(f"[1/2] dataset    {size:,} events in {now:%B %Y} (UTC) in {SLUG_PREFIX}{size}")
        data = dataset(bench.vendor, size, now=now, regenerate=args.regenerate, seed=args.seed)
        how = f"generated in {data.seconds:.1f} s" if data.seconds else "reused"
        say(f"    {how}: {data.events:,} events, {data.rollup_rows:,} rollup rows this month")
        datasets.append(data)
    environment.close_connections()

    timings = []
    with production_pages():
        for data in datasets:
            for path in (THIS_MONTH, LAST_12):
                say(f"[2/2] measure    GET {path} for {data.events:,} events × {args.repeat}")
                timings.append(measure(data, path, args.repeat))
    say("")
    say(summary(bench.vendor, timings))
    if args.cleanup:
        for data in datasets:
            workspaces.delete(data.workspace_id)
        say("Bench workspaces deleted.")
    return 0
