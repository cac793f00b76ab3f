#!/usr/bin/env python
"""The dashboard overview's server time for a workspace with 20 thousand and with 2 million events
in the current month: `bench/overview.py` (options: --help). Target: <= 150 ms at 2 million.

The overview reads only daily rollups, so its time should not grow with the number of events;
the two sizes side by side show it. Steps, for each size:

  1. dataset   a workspace `overview-bench-<N>` (owner, 3 API keys, a budget, last month's
               statement) with N priced usage events spread over this UTC month so far, written with
               PostgreSQL COPY (SQLite: batched INSERTs), and their daily rollups with one INSERT …
               SELECT … GROUP BY, as ingestion would keep them. Reused when its counts match.
  2. measure   GET / (this month) and GET /?period=last_12 through Django's full stack in this
               process (middleware, session, selectors, templates): warm-up, then --repeat timed
               requests each; median and p95, and the number of SQL queries.

The database is bench/database.py's choice: DATABASE_URL, else `meterboard_bench` on the local
PostgreSQL, else a SQLite file under var/bench/ (figures that say little about PostgreSQL). It
never touches `meterboard` or `test_meterboard`. --cleanup deletes the bench workspaces.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench import database  # noqa: E402

TARGET_MS = 150
SIZES = (20_000, 2_000_000)
SLUG_PREFIX = "overview-bench-"
OWNER_EMAIL = "overview-bench@example.com"
COPY_ROWS_PER_CHUNK = 50_000
KEY_NAMES = ("Production generators", "Batch jobs", "Analytics")

# (feature, model, steps, width, height, composition, weight): the mix of a busy tenant.
SHAPES = [
    *[("generation", "sd15", steps, w, h, comp, weight)
      for steps, sw in ((30, 5), (50, 3), (100, 1), (150, 0.3))
      for (w, h), hw in (((512, 512), 5), ((512, 768), 2), ((768, 512), 2), ((512, 1024), 1), ((640, 640), 0.5))
      for comp, cw in ((False, 0.88), (True, 0.12))
      for weight in [sw * hw * cw]],
    *[("generation", "sdxl", steps, w, h, comp, weight)
      for steps, sw in ((30, 5), (50, 3), (100, 1))
      for (w, h), hw in (((1024, 1024), 5), ((1024, 1536), 2), ((1536, 1024), 1.5), ((1024, 1824), 1), ((2048, 1024), 0.3))
      for comp, cw in ((False, 0.9), (True, 0.1))
      for weight in [sw * hw * cw * 0.6]],
    ("upscaling", "", None, None, None, False, 12),
    ("background_removal", "", None, None, None, False, 8),
    ("captioning", "", None, None, None, False, 7),
    ("magic_prompt", "", None, None, None, False, 6),
    ("detection", "", None, None, None, False, 4),
    ("pixelate", "", None, None, None, False, 2),
    ("training", "", None, None, None, False, 0.05),
]  # fmt: skip
QUANTITIES = (1, 1, 1, 2, 4)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/overview.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES),
                        help="events in the month, comma-separated (default 20000,2000000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per page and size (default 20)")
    parser.add_argument("--regenerate", action="store_true", help="generate the datasets again")
    parser.add_argument("--cleanup", action="store_true", help="delete the bench workspaces at the end")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(n.replace("_", "")) for n in args.sizes.split(",") if n.strip()]
    except ValueError:
        parser.error("--sizes: whole numbers, e.g. 20000,2000000")
    if not args.sizes or min(args.sizes) < 1 or args.repeat < 1:
        parser.error("--sizes and --repeat must be at least 1")
    return args


def say(text: str, *, end: str = "\n") -> None:
    print(text, end=end, flush=True)


# --- The dataset --------------------------------------------------------------------------------


@dataclass
class Dataset:
    slug: str
    workspace_id: int
    owner_id: int
    events: int
    rollup_rows: int
    seconds: float  # to generate (0 when reused)


def _priced_shapes(now: datetime) -> tuple[list[tuple], int]:
    """Each shape with its list price per quantity (billing.pricing, the book in force now)."""
    from billing.pricing import UsageItem, price_item
    from billing.selectors import price_book_history

    book = price_book_history().at(now)
    priced = []
    for feature, model, steps, width, height, comp, weight in SHAPES:
        prices = {q: price_item(book, UsageItem(feature, q, model, steps, width, height, comp)) for q in set(QUANTITIES)}
        priced.append((feature, model, steps, width, height, comp, weight, prices))
    return priced, book.id


def _workspace(slug: str, owner_email: str) -> tuple[int, int, list[int]]:
    from django.contrib.auth import get_user_model

    from workspaces.models import ApiKey, Membership
    from workspaces.services import api_key_create, workspace_create

    workspace = workspace_create(slug=slug, owner_email=owner_email, name=f"Overview bench ({slug[len(SLUG_PREFIX):]} events)")
    owner = get_user_model().objects.get(username=owner_email)
    Membership.objects.filter(workspace=workspace, user=owner).update(role=Membership.Role.OWNER)
    keys = list(ApiKey.objects.filter(workspace=workspace).order_by("pk").values_list("pk", flat=True))
    for name in KEY_NAMES[len(keys):]:
        keys.append(api_key_create(workspace=workspace, name=name).api_key.pk)
    return workspace.pk, owner.pk, keys


def _counts(workspace_id: int, month: date) -> tuple[int, int, int]:
    from django.db.models import Count, Sum

    from usage.models import DailyRollup, UsageEvent

    events = UsageEvent.objects.filter(workspace_id=workspace_id).count()
    rollups = DailyRollup.objects.filter(workspace_id=workspace_id, day__gte=month).aggregate(rows=Count("pk"), events=Sum("events"))
    return events, int(rollups["rows"] or 0), int(rollups["events"] or 0)


def _delete(workspace_id: int) -> None:
    from django.db import connection, transaction

    from billing.models import Statement, StatementLine
    from budgets.models import Budget
    from usage.models import DailyRollup, UsageEvent
    from workspaces.models import ApiKey, Membership, Workspace

    with transaction.atomic():
        with connection.cursor() as cursor:  # one statement, not a row-by-row ORM delete of millions
            cursor.execute(f"DELETE FROM {UsageEvent._meta.db_table} WHERE workspace_id = %s", [workspace_id])
        DailyRollup.objects.filter(workspace_id=workspace_id).delete()
        StatementLine.objects.filter(statement__workspace_id=workspace_id).delete()
        Statement.objects.filter(workspace_id=workspace_id).delete()
        Budget.objects.filter(workspace_id=workspace_id).delete()
        ApiKey.objects.filter(workspace_id=workspace_id).delete()
        Membership.objects.filter(workspace_id=workspace_id).delete()
        Workspace.objects.filter(pk=workspace_id).delete()


def _event_rows(count: int, workspace_id: int, keys: list[int], now: datetime, seed: int):
    """COPY text lines of `count` events spread over this UTC month up to `now`."""
    priced, book_id = _priced_shapes(now)
    weights = [shape[6] for shape in priced]
    rng = random.Random(seed)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max(int((now - month).total_seconds()) - 1, 1)
    shape_picks = rng.choices(range(len(priced)), weights=weights, k=count)
    key_weights = (6, 3, 1)[: len(keys)]
    for n, index in enumerate(shape_picks):
        feature, model, steps, width, height, comp, _, prices = priced[index]
        quantity = rng.choice(QUANTITIES)
        price = prices[quantity]
        occurred = month + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(1_000_000))
        key = rng.choices(keys, weights=key_weights)[0]
        event_id = f"ob-{n:08d}"
        content = hashlib.sha256(f"{event_id}{occurred}{feature}{quantity}".encode()).hexdigest()
        yield (
            workspace_id, key, event_id, occurred.isoformat(), now.isoformat(), feature, model,
            steps, width, height, comp, False, quantity, "{}", f"{price.unit_price}", f"{price.amount}", book_id, content,
        )  # fmt: skip


EVENT_COLUMNS = ("workspace_id", "api_key_id", "event_id", "occurred_at", "received_at", "feature", "model", "steps",
                 "width", "height", "composition_control", "spot", "quantity", "metadata", "unit_price", "amount",
                 "price_book_id", "content_hash")  # fmt: skip


def _copy_text(row: tuple) -> str:
    def text(value) -> str:
        if value is None:
            return r"\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        return str(value)

    return "\t".join(text(value) for value in row) + "\n"


def _write_events(vendor: str, rows, count: int) -> None:
    from django.db import connection, transaction

    from usage.models import UsageEvent

    table = UsageEvent._meta.db_table
    columns = ", ".join(EVENT_COLUMNS)
    written = 0
    started = time.monotonic()
    while written < count:
        chunk = [row for _, row in zip(range(COPY_ROWS_PER_CHUNK), rows, strict=False)]
        if not chunk:
            break
        with transaction.atomic(), connection.cursor() as cursor:
            if vendor == "postgresql":
                with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    copy.write("".join(_copy_text(row) for row in chunk))
            else:
                placeholders = ", ".join(["%s"] * len(EVENT_COLUMNS))
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", chunk)
        written += len(chunk)
        rate = written / max(time.monotonic() - started, 1e-9)
        say(f"\r    events: {written:,}/{count:,} ({rate:,.0f}/s)   ", end="")
    say("")


def _build_rollups(vendor: str, workspace_id: int) -> None:
    """The daily rollups of the workspace's events, as ingestion keeps them (usage.services)."""
    from django.db import connection, transaction

    from usage.models import DailyRollup, UsageEvent

    if vendor == "postgresql":
        day, micros, amount = "(occurred_at AT TIME ZONE 'UTC')::date", "(unit_price * 1000000)::bigint", "(sum(amount) * 1000000)::bigint"
    else:
        day, micros, amount = "date(occurred_at)", "CAST(round(unit_price * 1000000) AS INTEGER)", "CAST(round(sum(amount) * 1000000) AS INTEGER)"
    dims = (f"workspace_id, {day}, api_key_id, feature, model, coalesce(steps, 0), coalesce(width, 0), "
            f"coalesce(height, 0), composition_control, spot, {micros}")  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {DailyRollup._meta.db_table} WHERE workspace_id = %s", [workspace_id])
        cursor.execute(
            f"INSERT INTO {DailyRollup._meta.db_table} (workspace_id, day, api_key_id, feature, model, steps, width, "
            f"height, composition_control, spot, unit_price_micros, quantity, amount_micros, events) "
            f"SELECT {dims}, sum(quantity), {amount}, count(*) FROM {UsageEvent._meta.db_table} "
            f"WHERE workspace_id = %s GROUP BY {dims}",
            [workspace_id],
        )
        if vendor == "postgresql":
            cursor.execute(f"ANALYZE {DailyRollup._meta.db_table}")


def _extras(workspace_id: int, keys: list[int], now: datetime) -> None:
    """A workspace budget, a key budget and last month's statement: the overview shows them all."""
    from billing.models import Statement, StatementLine
    from billing.services import default_plan
    from budgets.models import Budget

    if not Budget.objects.filter(workspace_id=workspace_id).exists():
        Budget.objects.create(workspace_id=workspace_id, amount=Decimal(50_000), hard_limit=False)
        Budget.objects.create(workspace_id=workspace_id, api_key_id=keys[0], amount=Decimal(30_000), hard_limit=True)
    period = (now.replace(day=1) - timedelta(days=1)).date().replace(day=1)
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

    slug = f"{SLUG_PREFIX}{size}"
    month = now.date().replace(day=1)
    workspace_id, owner_id, keys = _workspace(slug, OWNER_EMAIL)
    events, rollup_rows, rollup_events = _counts(workspace_id, month)
    if not regenerate and events == size and rollup_events == size:
        _extras(workspace_id, keys, now)
        return Dataset(slug, workspace_id, owner_id, events, rollup_rows, 0.0)
    if events:
        say(f"    deleting {events:,} events of an earlier run")
        _delete(workspace_id)
        workspace_id, owner_id, keys = _workspace(slug, OWNER_EMAIL)
    started = time.monotonic()
    _write_events(vendor, _event_rows(size, workspace_id, keys, now, seed), size)
    say("    rollups: INSERT … SELECT … GROUP BY", end="")
    _build_rollups(vendor, workspace_id)
    _extras(workspace_id, keys, now)
    if vendor == "postgresql":
        from django.db import connection

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


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def report(vendor: str, timings: list[Timing]) -> str:
    rows = [(f"overview server time on {vendor} ({cores()} cores)", "median", "p95", "best", "queries", "rollup rows", "")]
    for t in timings:
        verdict = ""
        if t.page == "/" and t.size >= 2_000_000:
            verdict = f"{'ok' if t.median_ms <= TARGET_MS else 'MISSED'} (target <= {TARGET_MS} ms)"
        label = f"{t.size:,} events, {'this month' if t.page == '/' else 'last 12 months'}"
        rows.append((label, f"{t.median_ms:.1f} ms", f"{t.p95_ms:.1f} ms", f"{t.best_ms:.1f} ms", str(t.queries), f"{t.rollup_rows:,}", verdict))
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(6)]
    lines = ["".join(cell.ljust(widths[i]) if i < 6 else cell for i, cell in enumerate(row)).rstrip() for row in rows]
    rule = "-" * max(len(line) for line in lines)
    lines.insert(1, rule)
    lines.append(rule)
    month_rows = [t for t in timings if t.page == "/"]
    if len(month_rows) >= 2:
        small, large = month_rows[0], month_rows[-1]
        lines.append(
            f"{large.size:,} / {small.size:,} events: {large.size / small.size:,.0f}× the events, "
            f"{large.median_ms / small.median_ms:.2f}× the time (the overview reads rollups, not events)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    var_dir = BASE_DIR / "var" / "bench"
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        target = database.choose(os.environ.get("DATABASE_URL"), var_dir)
    except database.DatabaseError as exc:
        say(f"overview bench: {exc}")
        return 2
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DEBUG",)},
        "DATABASE_URL": target.url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or f"bench-{secrets.token_urlsafe(50)}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SITE_URL": "http://127.0.0.1",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "MB_VAR_DIR": str(var_dir),
    }
    say(f"Overview bench on {target.vendor} ({database.masked(target.url)}; {target.note})")
    say("[1/2] database   migrate")
    database.manage(BASE_DIR, env, "migrate", "--noinput")
    for name in ("DEBUG",):
        os.environ.pop(name, None)
    os.environ.update(env)
    database.django_setup()

    from django.test.utils import override_settings
    from django.utils import timezone

    now = timezone.now().astimezone(UTC)
    datasets = []
    for size in sorted(args.sizes):
        say(f"[1/2] dataset    {size:,} events in {now:%B %Y} (UTC) in {SLUG_PREFIX}{size}")
        data = dataset(target.vendor, size, now=now, regenerate=args.regenerate, seed=args.seed)
        how = f"generated in {data.seconds:.1f} s" if data.seconds else "reused"
        say(f"    {how}: {data.events:,} events, {data.rollup_rows:,} rollup rows this month")
        datasets.append(data)
    database.close_connections()

    timings = []
    # Production settings (DEBUG off), except that static files need no collectstatic manifest here.
    storages = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # fmt: skip
    with override_settings(STORAGES=storages, DEBUG=False):
        for data in datasets:
            for path in ("/", "/?period=last_12"):
                say(f"[2/2] measure    GET {path} for {data.events:,} events × {args.repeat}")
                timings.append(measure(data, path, args.repeat))
    say("")
    say(report(target.vendor, timings))
    if args.cleanup:
        for data in datasets:
            _delete(data.workspace_id)
        say("Bench workspaces deleted.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
