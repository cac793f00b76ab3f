"""The month-end close at scale (PostgreSQL only): `python -m bench close` (options: --help);
`python -m bench all` runs it after the ingestion benchmark.

  1. dataset   10,000 workspaces (an API key each) and 5,000,000 priced usage events in one past
               month (BENCH_PERIOD), written with COPY in arrival order, so each workspace's events
               are spread over the table as in production (bench/data.py); daily rollups with one
               INSERT … SELECT … GROUP BY; ANALYZE. Reused when the counts match (--close-regenerate
               to redo).
  2. floor     one GROUP BY over the month's raw events, per workspace and billable dimension:
               the least any close must read (bench/ceilings.py). The same from the daily rollups,
               for comparison.
  3. close     billing.close.period_close(BENCH_PERIOD) for every workspace, in this process
               (no Stripe), after deleting the statements an earlier run made. Target: <= 5 min;
               printed with its ratio to the floor of the same run.
  4. verify    one statement per workspace; the statements bill every unit of every event once,
               and their usage amounts equal the floor's.

Only the bench's own database is touched (bench/environment.py refuses `meterboard` and
`test_meterboard`); only 127.0.0.1; every loop is bounded by a count, the close also by
--close-timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from core.periods import period_bounds

from . import ceilings, cpu, environment, report
from .data import NoPriceBook, build_rollups, copy_close_events
from .report import Meter, Steps, table
from .workspaces import bulk_counts, bulk_delete, bulk_insert, delete_statements

HELP = "the month-end close of 10,000 workspaces and 5 million events, against one GROUP BY (the floor)"
EPILOG = "Quick run: python -m bench close --close-workspaces 100 --close-events 10000"
BENCH_PERIOD = date(2025, 6, 1)  # a past month (price book v1); 30 days
SLUG_PREFIX = "close-bench-"
CLOSE_TARGET_SECONDS = 300  # on PostgreSQL, 2 cores
LOCK_KEY = 0x6D62_636C  # pg_advisory_lock key held by the close benchmark ("mbcl")
STEPS = Steps(4, label="close", width=8)
say = STEPS.line


class CloseBenchError(RuntimeError):
    pass


class CloseTimeout(CloseBenchError):
    pass


# --- Arguments ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, *, fresh_db: bool = True) -> None:
    """The close's options (named --close-* since they are also `all`'s, beside ingestion's)."""
    group = parser.add_argument_group("close", "the month-end close benchmark (PostgreSQL only)")
    group.add_argument("--close-workspaces", type=int, default=10_000,
                       help="workspaces in the close dataset (default 10000; 0 skips the close benchmark)")
    group.add_argument("--close-events", type=int, default=5_000_000,
                       help="usage events in the close dataset, one month (default 5000000)")
    group.add_argument("--close-regenerate", action="store_true",
                       help="delete the close dataset and generate it again (else reused when its counts match)")
    group.add_argument("--close-timeout", type=float, default=1800,
                       help="abandon period_close after this many seconds (default 1800)")
    group.add_argument("--close-profile", metavar="FILE", default=None,
                       help="run period_close under cProfile, write the stats to FILE and print the top entries")
    group.add_argument("--close-seed", type=int, default=1, help="seed of the dataset generator (default 1)")
    if fresh_db:
        environment.add_fresh_db(parser)  # fmt: skip


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.close_workspaces < 0 or args.close_events < 0:
        parser.error("--close-workspaces and --close-events must be >= 0")
    if args.close_workspaces and args.close_events < args.close_workspaces:
        parser.error("--close-events must be at least --close-workspaces (every workspace gets an event)")
    if args.close_timeout <= 0:
        parser.error("--close-timeout must be > 0")


# --- Output ---------------------------------------------------------------------------------------


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
    rows = [(f"month-end close on {results.vendor or '?'} ({cpu.cores()} cores)", "measured", "target", "")]
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
            floor = (f"{results.close_seconds / results.floor_seconds:.1f}× the floor; "
                     if results.floor_seconds else "")
            rows.append((
                f"period_close ({results.closed:,} workspaces)",
                f"{results.close_seconds:.1f} s",
                f"<= {CLOSE_TARGET_SECONDS} s",
                (verdict if on_postgres else "(target is for PostgreSQL)")
                + f"  ({floor}{per:.1f} ms per workspace, {results.closed / results.close_seconds:,.0f} ws/s;"
                f" {results.queries:,} queries in all)",
            ))
        else:
            rows.append(("period_close", "not run", f"<= {CLOSE_TARGET_SECONDS} s", ""))
    lines = table(rows, (41, 16, 12))
    if results.verified:
        lines.append(f"verified: {results.verified}")
    if results.profile:
        lines.append(results.profile)
    return "\n".join(lines)


# --- The dataset ----------------------------------------------------------------------------------


def ensure_dataset(workspaces: int, events: int, *, regenerate: bool, seed: int, results: CloseResults) -> tuple[int, int]:
    """The dataset, reused when its counts match. Returns the bench workspaces' id range."""
    from django.db import DatabaseError, connection, transaction

    started = time.monotonic()
    with connection.cursor() as cursor:
        counts = bulk_counts(cursor, SLUG_PREFIX, BENCH_PERIOD)
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
                deleted = bulk_delete(cursor, SLUG_PREFIX)
        except DatabaseError as exc:
            raise CloseBenchError(f"could not delete the previous close dataset: {exc}") from exc
        with connection.cursor() as cursor:
            cursor.execute("VACUUM usage_usageevent")
            cursor.execute("VACUUM usage_dailyrollup")
        print(f" {deleted:,} events deleted ({time.monotonic() - step:.1f} s)", flush=True)
    step = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        keys = bulk_insert(cursor, SLUG_PREFIX, workspaces)
    print(f"      {len(keys):,} workspaces and API keys inserted ({time.monotonic() - step:.1f} s)", flush=True)
    copy_close_events(keys, events, BENCH_PERIOD, seed)
    low, high = min(keys), max(keys)
    step = time.monotonic()
    print("      daily rollups: one INSERT ... SELECT ... GROUP BY ...", end="", flush=True)
    rollups = build_rollups("postgresql", low, high)
    print(f" {rollups:,} rows ({time.monotonic() - step:.1f} s)", flush=True)
    step = time.monotonic()
    print("      ANALYZE ...", end="", flush=True)
    with connection.cursor() as cursor:
        for name in ("workspaces_workspace", "workspaces_apikey", "usage_usageevent", "usage_dailyrollup",
                     "billing_statement", "billing_statementline"):
            cursor.execute(f"ANALYZE {name}")
    print(f" done ({time.monotonic() - step:.1f} s)", flush=True)
    results.dataset_seconds = time.monotonic() - started
    results.dataset_note = f"generated (seed {seed})"
    return low, high


# --- The measurements -----------------------------------------------------------------------------


def timed_close(period: date, now: datetime, *, timeout: float, label: str = "closing",
                profiler: cProfile.Profile | None = None, capture: list | None = None):
    """billing.close.period_close(period, now=now) in this process with a progress meter, abandoned
    (CloseTimeout) after `timeout` seconds: (its report, seconds, queries). `capture`, a list, gets
    the queries (CaptureQueriesContext: their SQL with the parameters in it)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.close import period_close

    queries = [0]

    def count(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    meter: Meter | None = None
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal meter
        if meter is None:
            meter = Meter(label, total, "workspaces")
        meter.update(done, force=True)
        if time.monotonic() - started > timeout:
            raise CloseTimeout(f"period_close still running after {timeout:.0f} s: abandoned at {done:,}/{total:,} "
                               f"workspaces")

    captured = CaptureQueriesContext(connection) if capture is not None else contextlib.nullcontext()
    try:
        with connection.execute_wrapper(count), captured:
            if profiler:
                profiler.enable()
            try:
                report = period_close(period, now=now, progress=progress)
            finally:
                if profiler:
                    profiler.disable()
    finally:
        elapsed = time.monotonic() - started
        if meter is not None:
            print(flush=True)  # end the progress line
    if capture is not None:
        capture.extend(captured.captured_queries)
    return report, elapsed, queries[0]


def run_close(low: int, high: int, *, timeout: float, profile_path: str | None, results: CloseResults):
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        removed = delete_statements(cursor, low, high, BENCH_PERIOD)
    if removed:
        print(f"      deleted {removed:,} statements of {BENCH_PERIOD:%Y-%m} left by an earlier run", flush=True)
    _, end = period_bounds(BENCH_PERIOD)
    now = end + timedelta(days=2)
    profiler = cProfile.Profile() if profile_path else None
    say(3, "close", f"billing.close.period_close({BENCH_PERIOD:%Y-%m}, now={now:%Y-%m-%d %H:%M}Z), in process, "
                    f"no Stripe" + (" (under cProfile: slower)" if profiler else ""))
    try:
        report, elapsed, queries = timed_close(BENCH_PERIOD, now, timeout=timeout, profiler=profiler)
    except CloseTimeout as exc:
        raise CloseTimeout(f"{exc} (--close-timeout)") from exc
    finally:
        if profiler:
            profiler.dump_stats(profile_path)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            results.profile = f"cProfile of period_close (top 25 by cumulative time; full stats in {profile_path}):\n" + out.getvalue()
    results.close_seconds = elapsed
    results.closed = report.workspaces
    results.created = report.created
    results.queries = queries
    say(3, "close", f"{report.created:,} statements created, {report.already_closed:,} already closed, "
                    f"{report.empty:,} empty, of {report.workspaces:,} workspaces in {elapsed:.1f} s "
                    f"({queries:,} queries)")
    return report


def verify(low: int, high: int, floor_rows: list[tuple], results: CloseResults) -> None:
    from django.db import connection, transaction

    with connection.cursor() as cursor:  # fresh statistics: the tables were just emptied and refilled
        for name in ("billing_statement", "billing_statementline"):
            cursor.execute(f"ANALYZE {name}")
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
        results.floor_seconds, floor_rows = ceilings.floor(start, end)
        results.floor_rows = len(floor_rows)
        print(f" {len(floor_rows):,} groups in {results.floor_seconds:.1f} s", flush=True)
        say(2, "floor", "the same over the daily rollups ...", end="")
        results.rollup_seconds, rollup_rows = ceilings.rollup_floor(start.date(), end.date())
        results.rollup_rows = len(rollup_rows)
        print(f" {len(rollup_rows):,} groups in {results.rollup_seconds:.1f} s", flush=True)
        run_close(low, high, timeout=args.close_timeout, profile_path=args.close_profile, results=results)
        verify(low, high, floor_rows, results)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the close benchmark", flush=True)
        results.problems.append("close: interrupted")
    except (CloseBenchError, NoPriceBook) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        results.problems.append(f"close: {exc}")
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        except Exception:  # a broken connection: the session, and with it the lock, is gone anyway
            pass
    return results


def main(args: argparse.Namespace) -> int:
    """`python -m bench close`: database, migrate, the close benchmark, its table."""
    try:
        bench = environment.select(fresh=args.fresh_db)
        bench.migrate()
    except environment.DatabaseError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    bench.activate()
    print(f"Close benchmark on {bench.vendor} at {bench.where} ({bench.target.note})", flush=True)
    results = run(args, bench.vendor)
    print()
    print(summary(results))
    return report.problems(results.problems)
