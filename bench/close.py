"""The month-end close at scale (PostgreSQL only): `make bench` runs it after the ingestion phases;
`bench/close.py` (or `bench/run.py --close-only`) runs it alone. Options: --help, under "close".

  1. dataset   10,000 workspaces (an API key each) and 5,000,000 priced usage events in one past
               month (BENCH_PERIOD), written with COPY in arrival order, so each workspace's events
               are spread over the table as in production; daily rollups with one INSERT … SELECT
               … GROUP BY; ANALYZE. Reused when the counts match (--close-regenerate to redo).
  2. floor     one GROUP BY over the month's raw events, per workspace and billable dimension:
               the least any close must read. The same from the daily rollups, for comparison.
  3. close     billing.services.period_close(BENCH_PERIOD) for every workspace, in this process
               (no Stripe), after deleting the statements an earlier run made. Target: <= 5 min.
  4. verify    one statement per workspace; the statements bill every unit of every event once,
               and their usage amounts equal the floor's.

Only the bench's own database is touched (bench/database.py refuses `meterboard` and
`test_meterboard`); only 127.0.0.1; every loop is bounded by a count, the close also by
--close-timeout.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

BENCH_PERIOD = date(2025, 6, 1)  # a past month (price book v1); 30 days
SLUG_PREFIX = "close-bench-"
CLOSE_TARGET_SECONDS = 300  # on PostgreSQL, 2 cores
STEPS = 4
COPY_COMMIT_ROWS = 500_000  # one transaction per this many rows: an interrupted run loses little
LOCK_KEY = 0x6D62_636C  # pg_advisory_lock key held by the close benchmark ("mbcl")
SIZE_SKEW = 0.7  # workspace sizes follow 1/rank^0.7: a few big tenants, a long tail of small ones


class CloseBenchError(RuntimeError):
    pass


class CloseTimeout(CloseBenchError):
    pass


# --- Arguments ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("close", "the month-end close benchmark (PostgreSQL only)")
    group.add_argument("--close-workspaces", type=int, default=10_000,
                       help="workspaces in the close dataset (default 10000; 0 skips the close benchmark)")
    group.add_argument("--close-events", type=int, default=5_000_000,
                       help="usage events in the close dataset, one month (default 5000000)")
    group.add_argument("--close-regenerate", action="store_true",
                       help="delete the close dataset and generate it again (else reused when its counts match)")
    group.add_argument("--close-only", action="store_true", help="skip the ingestion phases: the close benchmark only")
    group.add_argument("--close-timeout", type=float, default=1800,
                       help="abandon period_close after this many seconds (default 1800)")
    group.add_argument("--close-profile", metavar="FILE", default=None,
                       help="run period_close under cProfile, write the stats to FILE and print the top entries")
    group.add_argument("--close-seed", type=int, default=1, help="seed of the dataset generator (default 1)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.close_workspaces < 0 or args.close_events < 0:
        parser.error("--close-workspaces and --close-events must be >= 0")
    if args.close_workspaces and args.close_events < args.close_workspaces:
        parser.error("--close-events must be at least --close-workspaces (every workspace gets an event)")
    if args.close_timeout <= 0:
        parser.error("--close-timeout must be > 0")
    if args.close_only and not args.close_workspaces:
        parser.error("--close-only with --close-workspaces 0 runs nothing")


# --- Output ---------------------------------------------------------------------------------------


def say(step: int | str, name: str, text: str, *, end: str = "\n") -> None:
    print(f"[close {step}/{STEPS}] {name:<8} {text}", end=end, flush=True)


class Meter:
    """A progress line rewritten in place: done/total, rate and time left."""

    def __init__(self, label: str, total: int, unit: str):
        self.label, self.total, self.unit = label, total, unit
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.shown < 0.5:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate else 0
        print(f"\r      {self.label}: {done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s, "
              f"{elapsed:.0f} s, ~{left:.0f} s left)   ", end="", flush=True)

    def finish(self, done: int) -> float:
        self.update(done, force=True)
        print(flush=True)
        return time.monotonic() - self.started


@dataclass
class CloseResults:
    vendor: str = ""
    skipped: str = ""
    workspaces: int = 0
    events: int = 0
    dataset_note: str = ""
    dataset_seconds: float = 0.0
    floor_seconds: float | None = None
    floor_rows: int = 0
    rollup_seconds: float | None = None
    rollup_rows: int = 0
    close_seconds: float | None = None
    closed: int = 0
    created: int = 0
    queries: int = 0
    verified: str = ""
    profile: str = ""
    problems: list[str] = field(default_factory=list)


def summary(results: CloseResults) -> str:
    from bench.run import cores  # here: bench.run imports this module

    rows = [(f"month-end close on {results.vendor or '?'} ({cores()} cores)", "measured", "target", "")]
    if results.skipped:
        rows.append(("close benchmark", "skipped", "", results.skipped))
    else:
        rows.append((f"dataset ({results.workspaces:,} ws, {results.events:,} events)",
                     f"{results.dataset_seconds:.1f} s", "", results.dataset_note))
        if results.floor_seconds is not None:
            rows.append(("floor: one GROUP BY over raw events", f"{results.floor_seconds:.1f} s", "",
                         f"({results.floor_rows:,} groups)"))
        if results.rollup_seconds is not None:
            rows.append(("same GROUP BY over daily rollups", f"{results.rollup_seconds:.1f} s", "",
                         f"({results.rollup_rows:,} groups)"))
        if results.close_seconds is not None:
            on_postgres = results.vendor == "postgresql"
            verdict = "ok" if results.close_seconds <= CLOSE_TARGET_SECONDS else "MISSED"
            per = results.close_seconds / results.closed * 1000 if results.closed else 0
            rows.append((
                f"period_close ({results.closed:,} workspaces)",
                f"{results.close_seconds:.1f} s",
                f"<= {CLOSE_TARGET_SECONDS} s",
                (verdict if on_postgres else "(target is for PostgreSQL)")
                + f"  ({per:.1f} ms per workspace, {results.closed / results.close_seconds:,.0f} ws/s;"
                f" {results.queries:,} queries in all)",
            ))
        else:
            rows.append(("period_close", "not run", f"<= {CLOSE_TARGET_SECONDS} s", ""))
    widths = (41, 16, 12)
    lines = [f"{a:<{widths[0]}}{b:<{widths[1]}}{c:<{widths[2]}}{d}".rstrip() for a, b, c, d in rows]
    rule = "-" * max(len(line) for line in lines)
    lines.insert(1, rule)
    lines.append(rule)
    if results.verified:
        lines.append(f"verified: {results.verified}")
    if results.profile:
        lines.append(results.profile)
    return "\n".join(lines)


# --- The dataset ----------------------------------------------------------------------------------


def period_bounds(period: date) -> tuple[datetime, datetime]:
    start = datetime(period.year, period.month, 1, tzinfo=UTC)
    after = (period.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start, datetime(after.year, after.month, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """One billable shape, priced once with billing.pricing; rows then reuse its text."""

    feature: str
    model: str = ""
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    composition: bool = False
    weight: float = 1.0


def shapes() -> list[Shape]:
    """A few dozen shapes in the proportions of bench/events.py: 70 % generation (SDXL 45 % of
    it), add-ons by popularity, a rare training."""
    out = []
    for model, sizes, share in (
        ("sd15", ((512, 512), (512, 768), (768, 512), (512, 1024)), 0.55),
        ("sdxl", ((1024, 1024), (1024, 1536), (1024, 1824), (1824, 1024)), 0.45),
    ):
        for steps, step_share in ((30, 0.5), (50, 0.3), (100, 0.15), (25, 0.05)):
            for n, (width, height) in enumerate(sizes):
                size_share = (0.5, 0.2, 0.2, 0.1)[n]
                weight = 70 * share * step_share * size_share
                out.append(Shape("generation", model, steps, width, height, False, weight * 0.85))
                if n < 2:
                    out.append(Shape("generation", model, steps, width, height, True, weight * 0.15 / 0.7))
    for feature, weight in (("upscaling", 10), ("background_removal", 7), ("captioning", 6),
                            ("magic_prompt", 3), ("detection", 2), ("pixelate", 1)):
        out.append(Shape(feature, weight=weight * 29.8 / 29))
    out.append(Shape("training", weight=0.2))
    return out


def _dataset_counts(cursor, period: date) -> dict[str, int]:
    start, end = period_bounds(period)
    cursor.execute(
        "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM workspaces_workspace WHERE slug LIKE %s",
        [SLUG_PREFIX + "%"],
    )
    workspaces, low, high = cursor.fetchone()
    counts = {"workspaces": workspaces, "low": low, "high": high, "events": 0, "in_period": 0, "rollup_events": 0,
              "keys": 0}
    if not workspaces:
        return counts
    cursor.execute("SELECT count(*) FROM workspaces_apikey WHERE workspace_id BETWEEN %s AND %s", [low, high])
    counts["keys"] = cursor.fetchone()[0]
    cursor.execute(
        "SELECT count(*), count(*) FILTER (WHERE occurred_at >= %s AND occurred_at < %s) "
        "FROM usage_usageevent WHERE workspace_id BETWEEN %s AND %s",
        [start, end, low, high],
    )
    counts["events"], counts["in_period"] = cursor.fetchone()
    cursor.execute("SELECT coalesce(sum(events), 0) FROM usage_dailyrollup WHERE workspace_id BETWEEN %s AND %s",
                   [low, high])
    counts["rollup_events"] = int(cursor.fetchone()[0])
    return counts


def _delete_statements(cursor, low: int, high: int, period: date | None = None) -> int:
    """The statements (lines, audit) of the bench workspaces: those of `period`, or all."""
    where = "workspace_id BETWEEN %s AND %s" + (" AND period = %s" if period else "")
    params = [low, high] + ([period] if period else [])
    scope = f"SELECT id FROM billing_statement WHERE {where}"
    cursor.execute(f"DELETE FROM billing_statementline WHERE statement_id IN ({scope})", params)
    cursor.execute(f"DELETE FROM billing_statementaudit WHERE statement_id IN ({scope})", params)
    cursor.execute(f"DELETE FROM billing_paymentattempt WHERE statement_id IN ({scope})", params)
    cursor.execute(f"DELETE FROM billing_statement WHERE {where}", params)
    return cursor.rowcount


def delete_dataset(cursor) -> int:
    """Remove every close-bench workspace and everything hanging off it. Returns events deleted."""
    cursor.execute("SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM workspaces_workspace WHERE slug LIKE %s",
                   [SLUG_PREFIX + "%"])
    low, high = cursor.fetchone()
    if not high:
        return 0
    _delete_statements(cursor, low, high)
    # When the ledger holds nothing but the close dataset (the usual case in the bench's own
    # database), TRUNCATE: instant, where deleting 5 million rows takes minutes.
    cursor.execute("SELECT count(*) FROM usage_usageevent WHERE workspace_id BETWEEN %s AND %s", [low, high])
    deleted = cursor.fetchone()[0]
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM usage_usageevent WHERE workspace_id NOT BETWEEN %s AND %s) "
        "OR EXISTS (SELECT 1 FROM usage_dailyrollup WHERE workspace_id NOT BETWEEN %s AND %s)",
        [low, high, low, high],
    )
    if cursor.fetchone()[0]:
        cursor.execute("DELETE FROM usage_dailyrollup WHERE workspace_id BETWEEN %s AND %s", [low, high])
        cursor.execute("DELETE FROM usage_usageevent WHERE workspace_id BETWEEN %s AND %s", [low, high])
    else:
        cursor.execute("TRUNCATE usage_dailyrollup, usage_usageevent")
    # The range holds only bench workspaces (inserted in one statement), but go by slug to be sure.
    ids = f"SELECT id FROM workspaces_workspace WHERE slug LIKE %s AND id BETWEEN {int(low)} AND {int(high)}"
    for table in ("workspaces_apikey", "workspaces_membership", "billing_planassignment", "billing_discount"):
        cursor.execute(f"DELETE FROM {table} WHERE workspace_id IN ({ids})", [SLUG_PREFIX + "%"])
    cursor.execute(f"DELETE FROM workspaces_workspace WHERE id IN ({ids})", [SLUG_PREFIX + "%"])
    return deleted


def _insert_workspaces(cursor, count: int) -> dict[int, int]:
    """Workspaces and one API key each, bulk: workspace id -> API key id. The keys can never
    authenticate (their hash is no SHA-256 of anything)."""
    cursor.execute(
        "INSERT INTO workspaces_workspace (name, slug, timezone, created_at) "
        "SELECT 'Close bench ' || g, %s || lpad(g::text, 6, '0'), 'UTC', now() "
        "FROM generate_series(1, %s) AS g ORDER BY g",
        [SLUG_PREFIX, count],
    )
    cursor.execute(
        "INSERT INTO workspaces_apikey (workspace_id, name, prefix, secret_hash, scopes, created_at) "
        "SELECT id, 'close bench', 'closebench' || id, 'not-a-secret', '[\"usage:write\"]'::jsonb, now() "
        "FROM workspaces_workspace WHERE slug LIKE %s ORDER BY id RETURNING workspace_id, id",
        [SLUG_PREFIX + "%"],
    )
    return dict(cursor.fetchall())


def _priced_shapes(period: date) -> tuple[list[str], list[list[str]], int]:
    """For each shape: the COPY text of its dimensions, and per quantity 1-4 the text of its
    unit price and amount (priced by billing.pricing with the book in force in `period`)."""
    from billing.pricing import UsageItem, price_item
    from billing.selectors import price_book_history

    start, _ = period_bounds(period)
    book = price_book_history().at(start)
    if book is None or book.id is None:
        raise CloseBenchError(f"no price book in force on {start:%Y-%m-%d}")
    dims, prices = [], []
    for shape in shapes():
        def text(value):
            return r"\N" if value is None else str(value)
        dims.append("\t".join((shape.feature, shape.model, text(shape.steps), text(shape.width), text(shape.height),
                               "t" if shape.composition else "f")))
        per_quantity = [""]
        for quantity in range(1, 5):
            price = price_item(book, UsageItem(shape.feature, quantity, shape.model, shape.steps, shape.width,
                                               shape.height, shape.composition))
            per_quantity.append(f"{price.unit_price}\t{price.amount}")
        prices.append(per_quantity)
    return dims, prices, book.id


COPY_COLUMNS = ("workspace_id", "api_key_id", "event_id", "occurred_at", "received_at", "feature", "model",
                "steps", "width", "height", "composition_control", "spot", "quantity", "metadata", "unit_price",
                "amount", "price_book_id", "content_hash")


def _copy_events(connection, keys: dict[int, int], events: int, period: date, seed: int) -> None:
    """COPY `events` rows into usage_usageevent in arrival (time) order, workspaces interleaved."""
    from django.db import transaction

    rng = random.Random(seed)
    dims, prices, book_id = _priced_shapes(period)
    all_shapes = shapes()
    workspace_ids = sorted(keys)
    rng.shuffle(workspace_ids)  # big tenants anywhere in the id range
    cumulative, total = [], 0.0
    for rank in range(1, len(workspace_ids) + 1):
        total += 1 / rank**SIZE_SKEW
        cumulative.append(total)
    # Each workspace uses a handful to all of the shapes, in the global proportions.
    subsets: dict[int, list[int]] = {}
    for workspace in workspace_ids:
        chosen = rng.sample(range(len(all_shapes)), rng.randint(3, len(all_shapes)))
        weights = [all_shapes[i].weight for i in chosen]
        picks = rng.choices(chosen, weights, k=64)  # a 64-slot urn: one random() per event
        subsets[workspace] = [f"{workspace}\t{keys[workspace]}\t", picks]
    # Every workspace has at least one event; the rest by size.
    owners = list(workspace_ids) + rng.choices(workspace_ids, cum_weights=cumulative, k=events - len(workspace_ids))
    rng.shuffle(owners)
    start, end = period_bounds(period)
    span = (end - start).total_seconds()
    base = start.timestamp()
    quantities = (1, 1, 1, 2, 2, 3, 4)
    columns = ", ".join(COPY_COLUMNS)
    meter = Meter("copying events", events, "events")
    done = 0
    block = 50_000  # rows per write; times are sorted within each block and the blocks follow each other
    while done < events:
        with transaction.atomic(), connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY usage_usageevent ({columns}) FROM STDIN") as copy:
                committed_at = done + min(COPY_COMMIT_ROWS, events - done)
                while done < committed_at:
                    n = min(block, committed_at - done)
                    low = done / events * span
                    width = n / events * span
                    instants = sorted(low + rng.random() * width for _ in range(n))
                    out = []
                    for offset, workspace in zip(instants, owners[done : done + n], strict=True):
                        done += 1
                        prefix, picks = subsets[workspace]
                        shape = picks[int(rng.random() * 64)]
                        quantity = quantities[int(rng.random() * 7)]
                        occurred = base + offset
                        received = min(occurred + 0.05 + rng.random() * 3, base + span + 3600)
                        event_id = f"cb-{done:09d}"
                        metadata = (f'{{"request_id": "req_{rng.getrandbits(64):016x}"}}' if rng.random() < 0.5
                                    else "{}")
                        out.append(
                            f"{prefix}{event_id}\t{datetime.fromtimestamp(occurred, UTC).isoformat()}\t"
                            f"{datetime.fromtimestamp(received, UTC).isoformat()}\t{dims[shape]}\t"
                            f"{'t' if rng.random() < 0.05 else 'f'}\t{quantity}\t{metadata}\t"
                            f"{prices[shape][quantity]}\t{book_id}\t"
                            f"{hashlib.sha256(event_id.encode()).hexdigest()}\n"
                        )
                    copy.write("".join(out))
                    meter.update(done)
    meter.finish(done)


ROLLUP_SQL = """
INSERT INTO usage_dailyrollup (workspace_id, day, api_key_id, feature, model, steps, width, height,
                               composition_control, spot, unit_price_micros, quantity, amount_micros, events)
SELECT workspace_id, (occurred_at AT TIME ZONE 'UTC')::date, api_key_id, feature, model, coalesce(steps, 0),
       coalesce(width, 0), coalesce(height, 0), composition_control, spot, (unit_price * 1000000)::bigint,
       sum(quantity), sum((amount * 1000000)::bigint), count(*)
FROM usage_usageevent
WHERE workspace_id BETWEEN %s AND %s
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
"""


def ensure_dataset(workspaces: int, events: int, *, regenerate: bool, seed: int, results: CloseResults) -> tuple[int, int]:
    """The dataset, reused when its counts match. Returns the bench workspaces' id range."""
    from django.db import DatabaseError, connection, transaction

    started = time.monotonic()
    with connection.cursor() as cursor:
        counts = _dataset_counts(cursor, BENCH_PERIOD)
    matches = (
        counts["workspaces"] == workspaces
        and counts["high"] - counts["low"] + 1 == workspaces
        and counts["keys"] == workspaces
        and counts["events"] == counts["in_period"] == counts["rollup_events"] == events
    )
    if matches and not regenerate:
        results.dataset_note = "reused (--close-regenerate to make it again)"
        say(1, "dataset", f"reusing {workspaces:,} workspaces and {events:,} events of {BENCH_PERIOD:%Y-%m} "
                          f"(counts match; rollups sum to the same)")
        results.dataset_seconds = time.monotonic() - started
        return counts["low"], counts["high"]

    why = "--close-regenerate" if matches else (
        f"found {counts['workspaces']:,} workspaces / {counts['events']:,} events" if counts["workspaces"] else "none yet")
    say(1, "dataset", f"generating {workspaces:,} workspaces and {events:,} events in {BENCH_PERIOD:%Y-%m} ({why})")
    if counts["workspaces"]:
        step = time.monotonic()
        print("      deleting the previous close dataset ...", end="", flush=True)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '60s'")  # TRUNCATE waits for other sessions
                deleted = delete_dataset(cursor)
        except DatabaseError as exc:
            raise CloseBenchError(f"could not delete the previous close dataset: {exc}") from exc
        with connection.cursor() as cursor:
            cursor.execute("VACUUM usage_usageevent")
            cursor.execute("VACUUM usage_dailyrollup")
        print(f" {deleted:,} events deleted ({time.monotonic() - step:.1f} s)", flush=True)
    step = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        keys = _insert_workspaces(cursor, workspaces)
    print(f"      {len(keys):,} workspaces and API keys inserted ({time.monotonic() - step:.1f} s)", flush=True)
    _copy_events(connection, keys, events, BENCH_PERIOD, seed)
    low, high = min(keys), max(keys)
    step = time.monotonic()
    print("      daily rollups: one INSERT ... SELECT ... GROUP BY ...", end="", flush=True)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(ROLLUP_SQL, [low, high])
        rollups = cursor.rowcount
    print(f" {rollups:,} rows ({time.monotonic() - step:.1f} s)", flush=True)
    step = time.monotonic()
    print("      ANALYZE ...", end="", flush=True)
    with connection.cursor() as cursor:
        for table in ("workspaces_workspace", "workspaces_apikey", "usage_usageevent", "usage_dailyrollup",
                      "billing_statement", "billing_statementline"):
            cursor.execute(f"ANALYZE {table}")
    print(f" done ({time.monotonic() - step:.1f} s)", flush=True)
    results.dataset_seconds = time.monotonic() - started
    results.dataset_note = f"generated (seed {seed})"
    return low, high


# --- The measurements -----------------------------------------------------------------------------

FLOOR_SQL = """
SELECT workspace_id, feature, model, steps, width, height, composition_control, spot, unit_price, sum(quantity)
FROM usage_usageevent
WHERE occurred_at >= %s AND occurred_at < %s
GROUP BY workspace_id, feature, model, steps, width, height, composition_control, spot, unit_price
"""
ROLLUP_FLOOR_SQL = """
SELECT workspace_id, feature, model, steps, width, height, composition_control, spot, unit_price_micros,
       sum(quantity)
FROM usage_dailyrollup
WHERE day >= %s AND day < %s
GROUP BY workspace_id, feature, model, steps, width, height, composition_control, spot, unit_price_micros
"""


def time_floor(sql: str, params: list) -> tuple[float, list[tuple]]:
    """One query, its rows fetched, the clock around both (statement_timeout 10 minutes)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '10min'")
        started = time.perf_counter()
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        return time.perf_counter() - started, rows


def run_close(low: int, high: int, *, timeout: float, profile_path: str | None, results: CloseResults):
    from django.db import connection, transaction

    from billing.services import period_bounds as service_bounds
    from billing.services import period_close

    with transaction.atomic(), connection.cursor() as cursor:
        removed = _delete_statements(cursor, low, high, BENCH_PERIOD)
    if removed:
        print(f"      deleted {removed:,} statements of {BENCH_PERIOD:%Y-%m} left by an earlier run", flush=True)
    _, end = service_bounds(BENCH_PERIOD)
    now = end + timedelta(days=2)
    queries = [0]

    def count(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    meter: Meter | None = None
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal meter
        if meter is None:
            meter = Meter("closing", total, "workspaces")
        meter.update(done, force=True)
        if time.monotonic() - started > timeout:
            raise CloseTimeout(f"period_close still running after {timeout:.0f} s (--close-timeout): abandoned "
                               f"at {done:,}/{total:,} workspaces")

    profiler = cProfile.Profile() if profile_path else None
    say(3, "close", f"billing.services.period_close({BENCH_PERIOD:%Y-%m}, now={now:%Y-%m-%d %H:%M}Z), in process, "
                    f"no Stripe" + (" (under cProfile: slower)" if profiler else ""))
    try:
        with connection.execute_wrapper(count):
            if profiler:
                profiler.enable()
            try:
                report = period_close(BENCH_PERIOD, now=now, progress=progress)
            finally:
                if profiler:
                    profiler.disable()
    finally:
        elapsed = time.monotonic() - started
        if meter is not None:
            print(flush=True)  # end the progress line
        if profiler:
            profiler.dump_stats(profile_path)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            results.profile = f"cProfile of period_close (top 25 by cumulative time; full stats in {profile_path}):\n" + out.getvalue()
    results.close_seconds = elapsed
    results.closed = report.workspaces
    results.created = report.created
    results.queries = queries[0]
    say(3, "close", f"{report.created:,} statements created, {report.already_closed:,} already closed, "
                    f"{report.empty:,} empty, of {report.workspaces:,} workspaces in {elapsed:.1f} s "
                    f"({queries[0]:,} queries)")
    return report


def verify(low: int, high: int, floor_rows: list[tuple], results: CloseResults) -> None:
    from django.db import connection, transaction

    with connection.cursor() as cursor:  # fresh statistics: the tables were just emptied and refilled
        for table in ("billing_statement", "billing_statementline"):
            cursor.execute(f"ANALYZE {table}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '10min'")
        cursor.execute("SELECT count(*) FROM billing_statement WHERE period = %s AND workspace_id BETWEEN %s AND %s "
                       "AND status <> 'void'", [BENCH_PERIOD, low, high])
        statements = cursor.fetchone()[0]
        cursor.execute(
            "SELECT coalesce(sum(l.quantity), 0), coalesce(sum(l.amount), 0) FROM billing_statementline l "
            "JOIN billing_statement s ON s.id = l.statement_id WHERE s.period = %s AND s.workspace_id BETWEEN %s AND %s "
            "AND s.status <> 'void' AND l.kind IN ('usage', 'late_usage')",
            [BENCH_PERIOD, low, high],
        )
        billed_units, billed_amount = cursor.fetchone()
        cursor.execute("SELECT coalesce(sum(quantity), 0) FROM usage_usageevent WHERE workspace_id BETWEEN %s AND %s",
                       [low, high])
        ledger_units = cursor.fetchone()[0]
    floor_amount = sum((Decimal(row[8]) * row[9] for row in floor_rows if low <= row[0] <= high), Decimal(0))
    problems = []
    if statements != results.workspaces:
        problems.append(f"{statements:,} statements for {results.workspaces:,} workspaces")
    if billed_units != ledger_units:
        problems.append(f"statements bill {billed_units:,} units, the ledger holds {ledger_units:,}")
    if billed_amount != floor_amount:
        problems.append(f"statements' usage {billed_amount} != the floor's {floor_amount}")
    if problems:
        results.problems.extend(f"close verify: {p}" for p in problems)
        say(4, "verify", "MISMATCH: " + "; ".join(problems))
    else:
        results.verified = (f"{statements:,} statements bill {billed_units:,} units = the ledger; their usage lines "
                            f"sum to {billed_amount} = the floor GROUP BY")
        say(4, "verify", results.verified)


def run(args: argparse.Namespace, vendor: str) -> CloseResults:
    """The close benchmark, Django already set up on the bench database."""
    results = CloseResults(vendor=vendor, workspaces=args.close_workspaces, events=args.close_events)
    if not args.close_workspaces:
        results.skipped = "(--close-workspaces 0)"
        return results
    if vendor != "postgresql":
        results.skipped = "(PostgreSQL only: COPY, and figures meant for the PostgreSQL target)"
        say("-", "skipped", "the close benchmark runs on PostgreSQL only (this run is on SQLite)")
        return results
    print(f"\nMonth-end close benchmark: {args.close_workspaces:,} workspaces, {args.close_events:,} events in "
          f"{BENCH_PERIOD:%Y-%m}", flush=True)
    from django.db import connection

    with connection.cursor() as cursor:  # one close benchmark at a time per database: they share the dataset
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        if not cursor.fetchone()[0]:
            results.skipped = "(another close benchmark is running on this database)"
            say("-", "skipped", "another close benchmark is running on this database (advisory lock held)")
            return results
    try:
        low, high = ensure_dataset(args.close_workspaces, args.close_events, regenerate=args.close_regenerate,
                                   seed=args.close_seed, results=results)
        start, end = period_bounds(BENCH_PERIOD)
        say(2, "floor", "one GROUP BY over the month's raw events ...", end="")
        results.floor_seconds, floor_rows = time_floor(FLOOR_SQL, [start, end])
        results.floor_rows = len(floor_rows)
        print(f" {len(floor_rows):,} groups in {results.floor_seconds:.1f} s", flush=True)
        say(2, "floor", "the same over the daily rollups ...", end="")
        results.rollup_seconds, rollup_rows = time_floor(ROLLUP_FLOOR_SQL, [start.date(), end.date()])
        results.rollup_rows = len(rollup_rows)
        print(f" {len(rollup_rows):,} groups in {results.rollup_seconds:.1f} s", flush=True)
        run_close(low, high, timeout=args.close_timeout, profile_path=args.close_profile, results=results)
        verify(low, high, floor_rows, results)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the close benchmark", flush=True)
        results.problems.append("close: interrupted")
    except CloseBenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        results.problems.append(f"close: {exc}")
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        except Exception:  # a broken connection: the session, and with it the lock, is gone anyway
            pass
    return results


def standalone(args: argparse.Namespace, environment) -> int:
    """`bench/run.py --close-only` (and `bench/close.py`): database, migrate, the close benchmark."""
    import os

    from bench import database

    var_dir = BASE_DIR / "var" / "bench"
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        target = database.choose(os.environ.get("DATABASE_URL"), var_dir, fresh=args.fresh_db)
        env = environment(target.url, var_dir)
        database.manage(BASE_DIR, env, "migrate", "--noinput")
    except database.DatabaseError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    for name in set(os.environ) - set(env):
        del os.environ[name]
    os.environ.update(env)
    database.django_setup()
    where = database.masked(target.url) if target.vendor == "postgresql" else target.name
    print(f"Close benchmark on {target.vendor} at {where} ({target.note})", flush=True)
    results = run(args, target.vendor)
    print()
    print(summary(results))
    for problem in results.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if results.problems else 0


if __name__ == "__main__":
    from bench.run import main

    sys.exit(main(["--close-only", *sys.argv[1:]]))
