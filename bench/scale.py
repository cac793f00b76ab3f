"""The events table at scale (issue 13, point 5; PostgreSQL only): `python -m bench scale`
(`make bench-scale`, options: --help). 20 million events over the 6 months before this one and this
month so far, against the same figures on an empty database measured in the same run:

  1. empty      a fresh database (`meterboard_bench_scale`, dropped and made again; on DATABASE_URL
                the bench's own workspaces are emptied instead), the month partitions made, and
                --workspaces workspaces (an API key each, sizes skewed as the close benchmark's:
                1/rank^0.7) holding only what the figures need: last month's events (the very rows
                the load writes for that month: the close has the same work to do in both), one
                event each the month before (closed first, so that the measured close has a
                previous statement, as at scale) and this month's events of the busiest workspace
                (the overview's). Then the three figures:
                  ingestion  usage.services.events_ingest in this process (no HTTP), batches of
                             1,000 events into this month, for --ingest-seconds: events/s
                  overview   GET /?period=this_month of the busiest workspace through Django's whole
                             stack (bench/overview.py's measure): the median of --repeat, ms
                  close      billing.close.period_close of last month for every workspace, the
                             cutoff 2 days after the month's end (as bench close): s
  2. load       the workspaces emptied again; --events events (20,000,000) spread over the months
                by their length, into the month partitions (made first: usage.partitions.ensure)
                in arrival order, by server-side INSERT … SELECT … generate_series, 250,000 events a
                statement, each writing the events' receipts in the same statement; the daily
                rollups a month at a time (bench/data.build_rollups); VACUUM ANALYZE. Printed with
                its rate.
  3. at scale   the months before last month closed (one period_close, not timed), then the same
                three figures, each with its ratio to the empty database's (at scale / empty).
  4. partitions the measured close's queries that read the events (captured), each EXPLAIN
                ANALYZEd: the partitions it read and the rows it read in each. A month's close must
                read that month's partition and, by design (docs/scaling.md), the last 5 minutes of
                the month before and the month after up to the cutoff: any other partition fails
                the run.
  5. summary    the table: each figure, empty and at scale, with its ratio and target.

Targets: the close reads its month's partition and those two edges only (the exit code); the
overview and the close at scale within 2× of the empty database's (ok/MISSED: on a shared machine
a ratio is noisy, so it does not fail the run). The database is dropped at the end (--keep keeps
it: about 12 GB at full size). Only the bench's own database is written (bench/environment.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from core.periods import current_period, next_month, period_bounds, previous_month

from . import cpu, environment, overview, report
from .close import CloseBenchError, timed_close
from .data import (
    SIZE_SKEW,
    EventFactory,
    NoPriceBook,
    build_rollups,
    close_shapes,
    occurred_window,
    price_shapes,
)
from .report import Steps, say, table
from .workspaces import bulk_clear, bulk_delete, bulk_insert

HELP = "ingestion, overview and close with 20 million events over 6 months, beside an empty database"
EPILOG = "Quick run: python -m bench scale --events 200000 --workspaces 100 --ingest-seconds 2 --repeat 3"
DATABASE = "meterboard_bench_scale"
SLUG_PREFIX = "scale-bench-"
LABEL = "Scale bench"
OWNER_EMAIL = "scale-bench@example.com"
MONTHS_BACK = 6
RATIO_TARGET = 2.0  # at scale / empty, for the overview and the close
CHUNK = 250_000  # events a statement (and a transaction) while loading
QUANTITIES = (1, 1, 1, 2, 2, 3, 4)
STEPS = Steps(5, label="scale", width=10)
step = STEPS.line


class ScaleBenchError(RuntimeError):
    pass


# --- Arguments ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--events", type=int, default=20_000_000, help="events loaded over the 6 past months and this one (default 20000000)")
    add("--workspaces", type=int, default=2_000, help="workspaces the events belong to (default 2000)")
    add("--ingest-seconds", type=float, default=5, help="seconds of in-process ingestion per measure (default 5)")
    add("--batch-size", type=int, default=1_000, help="events per events_ingest call (default 1000)")
    add("--repeat", type=int, default=10, help="timed overview requests per measure (default 10)")
    add("--close-timeout", type=float, default=1800, help="abandon a period_close after this many seconds (default 1800)")
    add("--seed", type=int, default=1, help="seed of the generator (default 1)")
    add("--keep", action="store_true",
        help="keep the database at the end (on DATABASE_URL: the bench's workspaces), else dropped (deleted)")  # fmt: skip


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.workspaces < 2:
        parser.error("--workspaces must be at least 2")
    if args.events < 10 * args.workspaces:
        parser.error("--events must be at least 10 × --workspaces (every workspace has events in every past month)")
    if args.ingest_seconds <= 0 or args.batch_size < 1 or args.repeat < 1 or args.close_timeout <= 0:
        parser.error("--ingest-seconds, --batch-size, --repeat and --close-timeout must be positive")


# --- Months and tenants ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Month:
    month: date
    start: datetime  # the month's first instant
    end: datetime  # the end of its events' window: the month's end, or a minute ago for this month
    cap: datetime  # the latest arrival: just before the month's end, or now
    events: int

    @property
    def month_end(self) -> datetime:
        return period_bounds(self.month)[1]


def plan_months(now: datetime, events: int) -> list[Month]:
    """The 6 months before this one and this month so far, with `events` shared by their length."""
    this = current_period(now)
    months = [this]
    for _ in range(MONTHS_BACK):
        months.insert(0, previous_month(months[0]))
    windows = []
    for month in months:
        start, end = period_bounds(month)
        if month == this:
            start, end = occurred_window(now)
        windows.append((month, start, end))
    span = sum((end - start).total_seconds() for _, start, end in windows)
    plan, given = [], 0
    for n, (month, start, end) in enumerate(windows):
        share = events - given if n == len(windows) - 1 else round(events * (end - start).total_seconds() / span)
        given += share
        cap = now if month == this else period_bounds(month)[1] - timedelta(microseconds=1)
        plan.append(Month(month, period_bounds(month)[0], end, cap, share))
    return plan


@dataclass
class Tenants:
    ids: list[int]  # by rank: the busiest first
    keys: list[int]  # their API keys, in the same order
    thresholds: list[float]  # the cumulative shares of ranks 1..n-1 (width_bucket's)
    low: int
    high: int

    @property
    def busiest(self) -> int:
        return self.ids[0]


def make_tenants(keys: dict[int, int], seed: int) -> Tenants:
    import random

    ids = sorted(keys)
    random.Random(seed).shuffle(ids)  # the big tenants anywhere in the id range
    weights = [1 / rank**SIZE_SKEW for rank in range(1, len(ids) + 1)]
    total, running, thresholds = sum(weights), 0.0, []
    for weight in weights[:-1]:
        running += weight
        thresholds.append(running / total)
    return Tenants(ids, [keys[i] for i in ids], thresholds, min(ids), max(ids))


# --- Loading ----------------------------------------------------------------------------------------

# One chunk of a month's events, in arrival order, and their receipts, in one statement. `picks`
# draws each row's random numbers once (a CTE with volatile functions is computed, not inlined);
# every workspace gets one event at each `stride`-th row, the rest by size; `only` keeps one
# workspace's rows of the same stream (the empty database's overview tenant).
LOAD_SQL = """
WITH picks AS (
    SELECT g,
           CASE WHEN mod(g - 1, %(stride)s::bigint) = 0 AND (g - 1) / %(stride)s::bigint < %(tenants)s::bigint
                THEN ((g - 1) / %(stride)s::bigint + 1)::int
                ELSE width_bucket(random(), %(thresholds)s::float8[]) + 1 END AS w,
           width_bucket(random(), %(shape_thresholds)s::float8[]) + 1 AS s,
           (ARRAY[1, 1, 1, 2, 2, 3, 4])[1 + floor(random() * 7)::int] AS q,
           %(start)s::timestamptz + make_interval(secs => ((g - 1) + random()) * %(step)s::float8) AS occurred,
           make_interval(secs => 0.05 + random() * 3) AS delay,
           random() < 0.05 AS spot,
           random() < 0.5 AS tagged
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
), stored AS (
    INSERT INTO usage_usageevent (workspace_id, api_key_id, event_id, occurred_at, received_at, feature, model,
                                  steps, width, height, composition_control, spot, quantity, metadata, unit_price,
                                  amount, price_book_id, content_hash)
    SELECT (%(ids)s::bigint[])[w], (%(keys)s::bigint[])[w], %(prefix)s || lpad(g::text, 9, '0'), occurred,
           least(occurred + delay, %(cap)s::timestamptz), (%(features)s::text[])[s], (%(models)s::text[])[s],
           (%(steps)s::int[])[s], (%(widths)s::int[])[s], (%(heights)s::int[])[s], (%(compositions)s::bool[])[s],
           spot, q,
           CASE WHEN tagged THEN jsonb_build_object('request_id', 'req_' || left(md5(%(prefix)s || g), 16))
                ELSE '{}'::jsonb END,
           (%(units)s::numeric[])[(s - 1) * 4 + q], (%(amounts)s::numeric[])[(s - 1) * 4 + q], %(book)s::bigint,
           md5(%(prefix)s || g) || md5(g || %(prefix)s)
    FROM picks
    WHERE %(only)s::int IS NULL OR w = %(only)s::int
    RETURNING workspace_id, event_id, content_hash, amount, received_at
)
INSERT INTO usage_eventreceipt (workspace_id, event_id, content_hash, amount, received_at)
SELECT workspace_id, event_id, content_hash, amount, received_at FROM stored
"""


def month_parameters(month: Month, tenants: Tenants, *, events: int | None = None) -> dict:
    """The loader's parameters for `month`: its shapes priced with the price book in force."""
    from pricing.selectors import price_book_history

    events = month.events if events is None else events
    shapes = close_shapes()
    book_id, priced = price_shapes(shapes, month.start, range(1, 5))
    book_at_end = price_book_history().at(month.cap)
    if book_at_end is None or book_at_end.id != book_id:
        raise ScaleBenchError(f"the price book changes within {month.month:%Y-%m}: the loader prices a month with one")
    total = sum(shape.weight for shape in shapes)
    running, shape_thresholds = 0.0, []
    for shape in shapes[:-1]:
        running += shape.weight
        shape_thresholds.append(running / total)
    return {
        "stride": max(1, events // len(tenants.ids)), "tenants": len(tenants.ids), "thresholds": tenants.thresholds,
        "shape_thresholds": shape_thresholds, "start": month.start,
        "step": (month.end - month.start).total_seconds() / max(events, 1), "ids": tenants.ids, "keys": tenants.keys,
        "prefix": f"sb-{month.month:%Y-%m}-", "cap": month.cap,
        "features": [s.feature for s in shapes], "models": [s.model for s in shapes], "steps": [s.steps for s in shapes],
        "widths": [s.width for s in shapes], "heights": [s.height for s in shapes],
        "compositions": [s.composition for s in shapes],
        "units": [p[q].unit_price for p in priced for q in range(1, 5)],
        "amounts": [p[q].amount for p in priced for q in range(1, 5)],
        "book": book_id, "only": None,
    }  # fmt: skip


def load_month(month: Month, tenants: Tenants, meter: report.Meter | None, done: int, *, events: int | None = None,
               only_busiest: bool = False, seed: int = 1) -> tuple[int, int]:
    """Write `month`'s events (or `events` of them) and their receipts, CHUNK a transaction: (events
    generated, rows stored). The same month, seed and count give the same rows."""
    from django.db import connection, transaction

    params = month_parameters(month, tenants, events=events)
    params["only"] = 1 if only_busiest else None
    total = month.events if events is None else events
    stored = 0
    with connection.cursor() as cursor:  # the month's stream starts from its own seed
        cursor.execute("SELECT setseed(%s)", [((seed * 7919 + month.month.toordinal()) % 10_000) / 10_000])
    for first in range(1, total + 1, CHUNK):
        params.update(first=first, last=min(total, first + CHUNK - 1))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(LOAD_SQL, params)
            stored += cursor.rowcount
        done += params["last"] - first + 1
        if meter:
            meter.update(done)
    return total, stored


def rollups_and_vacuum(months: list[Month], tenants: Tenants) -> tuple[int, float, float]:
    """The months' daily rollups, a month at a time, then VACUUM ANALYZE: (rollup rows, seconds
    for the rollups, seconds for the VACUUM)."""
    from django.db import connection

    started = time.monotonic()
    rows = 0
    for month in months:
        rows += build_rollups("postgresql", tenants.low, tenants.high, arrived=(month.start, month.month_end))
    rolled = time.monotonic() - started
    started = time.monotonic()
    with connection.cursor() as cursor:
        for name in ("usage_usageevent", "usage_eventreceipt", "usage_dailyrollup", "workspaces_workspace",
                     "workspaces_apikey", "billing_statement", "billing_statementline"):
            cursor.execute(f"VACUUM (ANALYZE) {name}")
    return rows, rolled, time.monotonic() - started


def clear(tenants: Tenants) -> None:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '60s'")  # TRUNCATE waits for other sessions
        bulk_clear(cursor, tenants.low, tenants.high)


def counts(tenants: Tenants) -> tuple[int, int, int]:
    """Events, receipts and the events the rollups sum, of the bench's workspaces."""
    from django.db import connection

    between = "WHERE workspace_id BETWEEN %s AND %s"
    with connection.cursor() as cursor:
        found = []
        for sql in (f"SELECT count(*) FROM usage_usageevent {between}", f"SELECT count(*) FROM usage_eventreceipt {between}",
                    f"SELECT coalesce(sum(events), 0) FROM usage_dailyrollup {between}"):  # fmt: skip
            cursor.execute(sql, [tenants.low, tenants.high])
            found.append(int(cursor.fetchone()[0]))
    return found[0], found[1], found[2]


# --- The figures ----------------------------------------------------------------------------------


@dataclass
class Figures:
    events: int = 0  # in the database when measured
    ingest_rate: float | None = None  # events/s
    ingest_events: int = 0
    overview_ms: float | None = None
    overview_queries: int = 0
    overview_events: int = 0  # the busiest workspace's this month
    close_seconds: float | None = None
    close_events: int = 0  # events that occurred in the closed month
    close_created: int = 0
    close_queries: list = field(default_factory=list)


def ingest(tenants: Tenants, seconds: float, batch_size: int, label: str, seed: int) -> tuple[float, int]:
    """events_ingest in this process, batches of `batch_size` into the second busiest workspace,
    for `seconds`: (events/s over the calls' own time, events accepted)."""
    from usage.services import events_ingest
    from workspaces.models import ApiKey, Workspace

    workspace = Workspace.objects.get(pk=tenants.ids[1])
    api_key = ApiKey.objects.get(pk=tenants.keys[1])
    factory = EventFactory(f"ingest-{label}-", seed=seed)
    events_ingest(workspace=workspace, api_key=api_key, raw_events=factory.batch(batch_size))  # warm-up
    accepted, busy, shown = 0, 0.0, 0.0
    started = time.monotonic()
    for _ in range(100_000):  # bounded; ends after `seconds`
        batch = factory.batch(batch_size)
        began = time.perf_counter()
        result = events_ingest(workspace=workspace, api_key=api_key, raw_events=batch)
        busy += time.perf_counter() - began
        if result.count("accepted") != len(batch):
            raise ScaleBenchError(f"events_ingest accepted {result.count('accepted')} of {len(batch)} events")
        accepted += len(batch)
        elapsed = time.monotonic() - started
        if elapsed - shown >= 0.5 or elapsed >= seconds:
            shown = elapsed
            say(f"\r      ingesting: {accepted:,} events ({accepted / busy:,.0f}/s, {elapsed:.0f} s)   ", end="")
        if elapsed >= seconds:
            break
    say()
    return accepted / busy, accepted


def overview_owner(workspace_id: int) -> tuple[str, int]:
    """The workspace's slug and an owner who can open its overview (made once)."""
    from django.contrib.auth import get_user_model

    from workspaces.models import Membership, Workspace

    user, _ = get_user_model().objects.get_or_create(username=OWNER_EMAIL, defaults={"email": OWNER_EMAIL})
    Membership.objects.update_or_create(workspace_id=workspace_id, user=user,
                                        defaults={"role": Membership.Role.OWNER})  # fmt: skip
    return Workspace.objects.get(pk=workspace_id).slug, user.pk


def measure_overview(tenants: Tenants, now: datetime, repeat: int) -> overview.Timing:
    from usage.models import DailyRollup, UsageEvent

    month = period_bounds(current_period(now))[0]
    slug, owner_id = overview_owner(tenants.busiest)
    events = UsageEvent.objects.filter(workspace_id=tenants.busiest, received_at__gte=month).count()
    rows = DailyRollup.objects.filter(workspace_id=tenants.busiest, day__gte=month.date()).count()
    data = overview.Dataset(slug, tenants.busiest, owner_id, events, rows, 0.0)
    with overview.production_pages():
        return overview.measure(data, overview.THIS_MONTH, repeat)


def cutoff(month: date, now: datetime) -> datetime:
    """A close's `now`: 2 days after the month's end (as bench close), never later than now."""
    return min(period_bounds(month)[1] + timedelta(days=2), now)


def events_in(month: date, tenants: Tenants) -> int:
    from usage.models import UsageEvent, received_since

    start, end = period_bounds(month)
    return UsageEvent.objects.filter(received_since(start), workspace_id__gte=tenants.low,
                                     workspace_id__lte=tenants.high,
                                     occurred_at__gte=start, occurred_at__lt=end).count()  # fmt: skip


def measure(phase: int, name: str, tenants: Tenants, months: list[Month], now: datetime, args, figures: Figures) -> None:
    """The three figures, after closing the months before the measured one (not timed)."""
    measured = months[-2].month  # last month
    before = previous_month(measured)
    report_, seconds, _ = timed_close(before, cutoff(before, now), timeout=args.close_timeout, label="catching up")
    caught = ", ".join(f"{month:%Y-%m}: {n:,}" for month, n in sorted(report_.months.items()))
    step(phase, name, f"months up to {before:%Y-%m} closed first (not timed): {report_.created:,} statements "
                      f"({caught}) in {seconds:.1f} s")  # fmt: skip
    figures.events = counts(tenants)[0]

    step(phase, name, f"ingestion: events_ingest in process, {args.batch_size:,} events a call, "
                      f"{args.ingest_seconds:g} s, into {now:%Y-%m}")  # fmt: skip
    figures.ingest_rate, figures.ingest_events = ingest(tenants, args.ingest_seconds, args.batch_size,
                                                        f"{phase}", args.seed + phase)  # fmt: skip

    step(phase, name, f"overview: GET / of the busiest workspace (this month) × {args.repeat} ...", end="")
    timing = measure_overview(tenants, now, args.repeat)
    figures.overview_ms, figures.overview_queries, figures.overview_events = (timing.median_ms, timing.queries,
                                                                              timing.size)  # fmt: skip
    say(f" median {timing.median_ms:.1f} ms ({timing.queries} queries; {timing.size:,} events, "
        f"{timing.rollup_rows:,} rollup rows this month)")

    figures.close_events = events_in(measured, tenants)
    at = cutoff(measured, now)
    step(phase, name, f"close: period_close({measured:%Y-%m}, now={at:%Y-%m-%d %H:%M}Z) of {len(tenants.ids):,} "
                      f"workspaces, {figures.close_events:,} events in the month")  # fmt: skip
    report_, figures.close_seconds, queries = timed_close(measured, at, timeout=args.close_timeout,
                                                          capture=figures.close_queries)  # fmt: skip
    figures.close_created = report_.months.get(measured, 0)
    step(phase, name, f"close: {figures.close_created:,} statements of {measured:%Y-%m} in {figures.close_seconds:.1f} s "
                      f"({queries:,} queries)")  # fmt: skip


# --- The partitions the close reads ---------------------------------------------------------------


@dataclass
class PartitionReads:
    month: date
    queries: list[tuple[str, float, dict[str, int]]] = field(default_factory=list)  # (what, ms, rows by partition)

    @property
    def allowed(self) -> list[str]:
        from usage.partitions import name_of

        return [name_of(previous_month(self.month)), name_of(self.month), name_of(next_month(self.month))]

    @property
    def totals(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for _, _, rows in self.queries:
            for name, n in rows.items():
                found[name] = found.get(name, 0) + n
        return found

    @property
    def outside(self) -> list[str]:
        return sorted(set(self.totals) - set(self.allowed))

    @property
    def share(self) -> float:
        """The closed month's partition's share of the rows read."""
        from usage.partitions import name_of

        total = sum(self.totals.values())
        return self.totals.get(name_of(self.month), 0) / total if total else 0.0

    def verdict(self) -> str:
        totals = self.totals
        read = ", ".join(f"{name.removeprefix('usage_usageevent_')} ({totals[name]:,} rows)" for name in sorted(totals))
        return f"close of {self.month:%Y-%m} reads partition(s): {read or 'none'}"


def partitions_read(month: date, queries: list[dict]) -> PartitionReads:
    """Each captured SELECT that names the events, EXPLAIN ANALYZEd (run again: the rows it reads)."""
    from django.db import transaction

    from usage.partitions import partitions_in_plan

    found = PartitionReads(month)
    for query in queries:
        sql = query["sql"]
        if "usage_usageevent" not in sql or not sql.lstrip().upper().startswith("SELECT"):
            continue
        with transaction.atomic():
            started = time.perf_counter()
            rows = partitions_in_plan(sql, analyze=True)
            elapsed = (time.perf_counter() - started) * 1000
        what = " ".join(sql.split())[:90]
        found.queries.append((what, elapsed, rows))
    return found


# --- Output -----------------------------------------------------------------------------------------


@dataclass
class Results:
    empty: Figures = field(default_factory=Figures)
    scale: Figures = field(default_factory=Figures)
    workspaces: int = 0
    events: int = 0
    batch_size: int = 1_000
    month: date | None = None
    load_seconds: float = 0.0
    load_rows: int = 0
    rollup_seconds: float = 0.0
    vacuum_seconds: float = 0.0
    reads: PartitionReads | None = None
    problems: list[str] = field(default_factory=list)


def ratio(at_scale: float | None, empty: float | None) -> str:
    return f"{at_scale / empty:.2f}×" if at_scale is not None and empty else ""


def within(at_scale: float | None, empty: float | None) -> str:
    if at_scale is None or not empty:
        return ""
    return f"<= {RATIO_TARGET:g}×  {'ok' if at_scale / empty <= RATIO_TARGET else 'MISSED'}"


def summary(results: Results) -> str:
    e, s = results.empty, results.scale
    month = f"{results.month:%Y-%m}" if results.month else "last month"

    def figure(value, unit, fmt):
        return f"{value:{fmt}} {unit}" if value is not None else "not run"

    rows = [
        (f"at scale on postgresql ({cpu.cores()} cores)", "empty db", "at scale", "ratio", "target"),
        ("events in the database", f"{e.events:,}", f"{s.events:,}", "", ""),
        (f"ingestion: events_ingest in process, {results.batch_size:,}/call",
         figure(e.ingest_rate, "ev/s", ",.0f"), figure(s.ingest_rate, "ev/s", ",.0f"),
         ratio(s.ingest_rate, e.ingest_rate), ""),
        ("overview: GET / of the busiest workspace",
         figure(e.overview_ms, "ms", ".1f"), figure(s.overview_ms, "ms", ".1f"),
         ratio(s.overview_ms, e.overview_ms), within(s.overview_ms, e.overview_ms)),
        (f"close of {month}: {results.workspaces:,} ws, {s.close_events or e.close_events:,} events",
         figure(e.close_seconds, "s", ".1f"), figure(s.close_seconds, "s", ".1f"),
         ratio(s.close_seconds, e.close_seconds), within(s.close_seconds, e.close_seconds)),
    ]  # fmt: skip
    if results.reads is not None:
        reads = results.reads
        rows.append((f"close of {month} reads its partition + edges", "", f"{reads.share:.1%} of rows", "",
                     "ok" if not reads.outside else f"FAILED: also {', '.join(reads.outside)}"))
    lines = table(rows, [max(len(row[i]) for row in rows) + 2 for i in range(4)])
    if results.load_rows:
        total = results.load_seconds + results.rollup_seconds + results.vacuum_seconds
        lines.append(f"load: {results.load_rows:,} events and their receipts in {results.load_seconds:.0f} s "
                     f"({results.load_rows / results.load_seconds:,.0f} events/s); rollups {results.rollup_seconds:.0f} s; "
                     f"VACUUM ANALYZE {results.vacuum_seconds:.0f} s; {total / 60:.1f} min in all")  # fmt: skip
    if results.reads is not None:
        lines.append(results.reads.verdict())
    lines.append("ratios: at scale / empty database, same run (ingestion: below 1 is slower)")
    return "\n".join(lines)


# --- The run --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, results: Results) -> None:
    from django.db import connection, transaction
    from django.utils import timezone

    from usage import partitions

    now = timezone.now().astimezone(UTC)
    months = plan_months(now, args.events)
    measured, before = months[-2], months[-3]
    results.month, results.workspaces, results.events = measured.month, args.workspaces, args.events
    results.batch_size = args.batch_size

    made = partitions.ensure(extra=[m.month for m in months])
    with transaction.atomic(), connection.cursor() as cursor:
        bulk_delete(cursor, SLUG_PREFIX)  # an earlier run's, on DATABASE_URL (the own database is new)
        keys = bulk_insert(cursor, SLUG_PREFIX, args.workspaces, label=LABEL)
    tenants = make_tenants(keys, args.seed)
    shares = ", ".join(f"{m.month:%Y-%m} {m.events:,}" for m in months)
    step(1, "empty", f"{len(keys):,} workspaces; partitions {', '.join(f'{m:%Y-%m}' for m in made) or 'there'}; "
                     f"the months' events: {shares}")  # fmt: skip

    started = time.monotonic()
    step(1, "empty", f"{measured.month:%Y-%m}'s {measured.events:,} events, one each in {before.month:%Y-%m}, "
                     f"this month's of the busiest workspace")  # fmt: skip
    meter = report.Meter("generating", measured.events + len(tenants.ids) + months[-1].events, "events")
    done, stored = 0, 0
    for month, count, only in ((before, len(tenants.ids), False), (measured, None, False), (months[-1], None, True)):
        generated, rows = load_month(month, tenants, meter, done, events=count, only_busiest=only, seed=args.seed)
        done, stored = done + generated, stored + rows
    meter.finish(done)
    rollups_and_vacuum([before, measured, months[-1]], tenants)
    step(1, "empty", f"{stored:,} events stored, rollups, VACUUM ANALYZE ({time.monotonic() - started:.1f} s)")
    measure(1, "empty", tenants, months, now, args, results.empty)
    if results.empty.close_created != len(tenants.ids):
        results.problems.append(f"empty database: the close made {results.empty.close_created:,} statements of "
                                f"{measured.month:%Y-%m} for {len(tenants.ids):,} workspaces")  # fmt: skip

    step(2, "load", f"emptying the workspaces, then {args.events:,} events over {len(months)} months "
                    f"(INSERT … SELECT … generate_series, {CHUNK:,} a statement, receipts in the same)")  # fmt: skip
    clear(tenants)
    started = time.monotonic()
    meter = report.Meter("loading", args.events, "events")
    done = 0
    for month in months:
        generated, rows = load_month(month, tenants, meter, done, seed=args.seed)
        done += generated
        results.load_rows += rows
    results.load_seconds = meter.finish(done)
    step(2, "load", "daily rollups a month at a time, then VACUUM ANALYZE ...", end="")
    rollup_rows, results.rollup_seconds, results.vacuum_seconds = rollups_and_vacuum(months, tenants)
    say(f" {rollup_rows:,} rollup rows in {results.rollup_seconds:.0f} s, VACUUM ANALYZE {results.vacuum_seconds:.0f} s")
    events, receipts, rolled = counts(tenants)
    if not events == receipts == rolled == args.events:
        raise ScaleBenchError(f"loaded {events:,} events, {receipts:,} receipts, rollups of {rolled:,}; "
                              f"expected {args.events:,} of each")  # fmt: skip
    step(2, "load", f"{events:,} events = receipts = the rollups' sum; {events / results.load_seconds:,.0f} events/s "
                    f"({results.load_seconds:.0f} s; with rollups and VACUUM "
                    f"{(results.load_seconds + results.rollup_seconds + results.vacuum_seconds) / 60:.1f} min)")  # fmt: skip

    measure(3, "at scale", tenants, months, now, args, results.scale)
    if results.scale.close_created != len(tenants.ids):
        results.problems.append(f"at scale: the close made {results.scale.close_created:,} statements of "
                                f"{measured.month:%Y-%m} for {len(tenants.ids):,} workspaces")  # fmt: skip
    if results.scale.close_events != results.empty.close_events:
        results.problems.append(f"the closes are not alike: {results.empty.close_events:,} events in "
                                f"{measured.month:%Y-%m} empty, {results.scale.close_events:,} at scale")  # fmt: skip
    e, s = results.empty, results.scale
    step(3, "at scale", f"at scale / empty: ingestion {ratio(s.ingest_rate, e.ingest_rate)}, overview "
                        f"{ratio(s.overview_ms, e.overview_ms)}, close {ratio(s.close_seconds, e.close_seconds)}")

    step(4, "partitions", "EXPLAIN ANALYZE of the close's queries that read the events (run again) ...")
    results.reads = reads = partitions_read(measured.month, results.scale.close_queries)
    for n, (what, ms, rows) in enumerate(reads.queries, 1):
        read = ", ".join(f"{name.removeprefix('usage_usageevent_')}: {count:,}" for name, count in sorted(rows.items()))
        say(f"      {n}. {ms:,.0f} ms, rows read: {read or 'none'}\n         {what} …")
    say(f"      {reads.verdict()}")
    say(f"      {reads.share:.1%} of the rows read come from {measured.month:%Y-%m}'s partition; allowed: "
        f"{', '.join(reads.allowed)} (the last 5 minutes before the month, the month, the next up to the cutoff)")
    if reads.outside:
        results.problems.append(f"the close of {measured.month:%Y-%m} reads partitions outside "
                                f"{{previous, month, next}}: {', '.join(reads.outside)}")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """`python -m bench scale`: a fresh database, the two sets of figures, the table."""
    try:
        bench = environment.select_postgres(DATABASE, reset=True)
    except environment.NeedsPostgres as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    except environment.DatabaseError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    step(1, "database", f"{bench.where} ({bench.target.note}): migrate ...", end="")
    started = time.monotonic()
    try:
        bench.migrate()
    except environment.DatabaseError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    say(f" done ({time.monotonic() - started:.1f} s)")
    bench.activate()
    results = Results()
    try:
        run(args, results)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the scale benchmark", flush=True)
        results.problems.append("scale: interrupted")
    except (ScaleBenchError, CloseBenchError, NoPriceBook) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        results.problems.append(f"scale: {exc}")
    finally:
        if not args.keep:
            try:
                if environment.drop_own_database(bench.target):
                    say(f"(database {bench.target.name} dropped; --keep keeps it)")
                else:
                    from django.db import connection, transaction

                    with transaction.atomic(), connection.cursor() as cursor:
                        bulk_delete(cursor, SLUG_PREFIX)
                    say("(the bench's workspaces deleted; --keep keeps them)")
            except Exception as exc:  # cleanup must not hide the figures
                print(f"cleanup failed: {exc}", file=sys.stderr)
    say()
    say(summary(results))
    return report.problems(results.problems)
