#!/usr/bin/env python
"""Ingestion throughput on the configured database: `make bench` (options: BENCH_ARGS="--help").

Runs the real HTTP stack (gunicorn, config.wsgi, 2 sync workers on 127.0.0.1) against the database
of DATABASE_URL, or else meterboard_bench on the local PostgreSQL (created and migrated here), or
else a SQLite file under var/bench/ (figures that say nothing about the PostgreSQL targets). It
never touches the `meterboard` or `test_meterboard` databases. Phases:

  1. database   choose it, create it if needed, `manage.py migrate`
  2. workspace  a new workspace and API key per run (`create_workspace`, `create_api_key`)
  3. server     gunicorn, waited for until it answers; stopped at the end, also on errors/Ctrl-C
  4. batched    POST /api/v1/events with 1,000 events per request over 2 connections: events/s
  5. single     one event per request over a few connections (wrk when present): requests/s, p50/p99
  6. verify     the events stored equal the events the 200 answers accepted; the rollups agree
  7. COPY       the raw PostgreSQL COPY rate of the same rows into a scratch copy of the table
  8. cleanup    the run's workspace and events are deleted (--keep to keep them)

Then a summary table, with where the CPU went in each load phase (gunicorn, PostgreSQL, the load
generator, other processes: Linux /proc), which says both where to optimise and whether something
else on the machine skewed the figures. Only 127.0.0.1 is ever contacted; every loop is bounded by
a count and the single-event phase also by --seconds.

Then, a separate benchmark with its own table: the month-end close (bench/close.py; PostgreSQL
only; --close-workspaces 0 skips it, --close-only runs it alone).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench import clients, close, cpu, database  # noqa: E402
from bench.events import EventFactory, batch_body, occurred_window  # noqa: E402
from bench.server import Gunicorn, ServerError  # noqa: E402

BATCHED_TARGET = 10_000  # events/s, on PostgreSQL, 2 cores
SINGLE_TARGET = 500  # requests/s, on PostgreSQL, 2 cores
PHASES = 8
OWNER_EMAIL = "bench@example.com"
PREFIX_WARM, PREFIX_BATCHED, PREFIX_SINGLE = "w-", "b-", "s-"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Meterboard ingestion throughput over HTTP (gunicorn) on the configured database.",
        epilog='Quick run: make bench BENCH_ARGS="--batches 10 --singles 1000 --seconds 5 --copy-rows 20000 '
        '--close-workspaces 0"; the close alone: make bench BENCH_ARGS=--close-only',
    )
    parser.add_argument("--batches", type=int, default=60, help="batched requests to send (default 60)")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="events per batch (default 1000, the API's maximum)"
    )
    parser.add_argument(
        "--batch-connections", type=int, default=2, help="concurrent connections, batched (default 2)"
    )
    parser.add_argument(
        "--singles",
        type=int,
        default=10_000,
        help="single-event requests (default 10000; the phase also ends after --seconds)",
    )
    parser.add_argument(
        "--seconds", type=float, default=30, help="time limit of the single-event phase (default 30)"
    )
    parser.add_argument(
        "--connections", type=int, default=4, help="concurrent connections, single events (default 4)"
    )
    parser.add_argument(
        "--copy-rows", type=int, default=100_000, help="rows for the COPY ceiling, 0 to skip (default 100000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="single-event load generator: wrk when available (default), or Python",
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--keep", action="store_true", help="keep the run's workspace and events")
    parser.add_argument(
        "--fresh-db",
        action="store_true",
        help="drop and re-create the bench's own database first (not one named by DATABASE_URL)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the event generator (default: random)"
    )
    close.add_arguments(parser)
    args = parser.parse_args(argv)
    close.check_arguments(parser, args)
    for name in ("batches", "singles", "copy_rows"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("batch_size", "batch_connections", "connections", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_size > 1000:
        parser.error("--batch-size must be <= 1000 (the API's maximum batch)")
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    return args


# --- Output -------------------------------------------------------------------------------------


def number(value: float) -> str:
    return f"{value:,.0f}"


class Progress:
    def __init__(self) -> None:
        self.started = 0.0

    def begin(self, step: int, name: str, what: str) -> None:
        self.started = time.monotonic()
        print(f"[{step}/{PHASES}] {name:<10} {what} ...", end="", flush=True)

    def end(self, result: str) -> None:
        print(f" {result} ({time.monotonic() - self.started:.1f} s)", flush=True)

    @staticmethod
    def line(step: int, name: str, text: str) -> None:
        print(f"[{step}/{PHASES}] {name:<10} {text}", flush=True)


@dataclass
class Results:
    vendor: str = ""
    batched: clients.BatchRun | None = None
    singles: clients.SinglesRun | None = None
    copy: database.CopyRun | None = None
    copy_note: str = ""
    batched_cpu: cpu.Usage | None = None
    singles_cpu: cpu.Usage | None = None
    verified: str = ""
    problems: list[str] = field(default_factory=list)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def summary(results: Results, args: argparse.Namespace) -> str:
    on_postgres = results.vendor == "postgresql"
    rows = [(f"ingestion on {results.vendor} ({cores()} cores)", "measured", "target", "")]

    def verdict(value: float, target: float) -> str:
        if not on_postgres:
            return "(target is for PostgreSQL)"
        return "ok" if value >= target else "MISSED"

    batched = results.batched
    if batched is not None and batched.requests:
        rows.append(
            (
                f"batched ({args.batch_size:,}/request)",
                f"{number(batched.events_per_second)} ev/s",
                f">= {BATCHED_TARGET:,}",
                verdict(batched.events_per_second, BATCHED_TARGET)
                + f"  (p50 {clients.percentile(batched.latencies, 0.5) * 1000:.0f} ms,"
                f" p99 {clients.percentile(batched.latencies, 0.99) * 1000:.0f} ms per request)",
            )
        )
    else:
        rows.append((f"batched ({args.batch_size:,}/request)", "not run", f">= {BATCHED_TARGET:,}", ""))
    singles = results.singles
    if singles is not None and singles.answered:
        rows.append(
            (
                "single event per request",
                f"{number(singles.requests_per_second)} req/s",
                f">= {SINGLE_TARGET:,}",
                verdict(singles.requests_per_second, SINGLE_TARGET)
                + f"  (p50 {singles.p(0.5):.1f} ms, p99 {singles.p(0.99):.1f} ms)",
            )
        )
    else:
        rows.append(("single event per request", "not run", f">= {SINGLE_TARGET:,}", ""))
    if results.copy is not None:
        rows.append(("raw COPY ceiling", f"{number(results.copy.rows_per_second)} rows/s", "", ""))
    else:
        rows.append(("raw COPY ceiling", "skipped", "", results.copy_note))
    widths = (41, 16, 12)
    lines = [f"{a:<{widths[0]}}{b:<{widths[1]}}{c:<{widths[2]}}{d}".rstrip() for a, b, c, d in rows]
    rule = "-" * max(len(line) for line in lines)
    lines.insert(1, rule)
    lines.append(rule)
    if results.verified:
        lines.append(f"verified: {results.verified}")
    if results.batched_cpu and batched is not None and batched.accepted:
        lines.append(
            "batched: " + results.batched_cpu.describe(batched.accepted, 1000, "events", postgres=on_postgres)
        )
    if results.singles_cpu and singles is not None and singles.answered:
        lines.append(
            "single:  " + results.singles_cpu.describe(singles.answered, 1, "request", postgres=on_postgres)
        )
    if not on_postgres:
        lines.append("NOTE: SQLite fallback. These figures are NOT comparable with the PostgreSQL targets.")
    return "\n".join(lines)


# --- The run ------------------------------------------------------------------------------------


def bench_environment(database_url: str, var_dir: Path) -> dict[str, str]:
    """The children's (and this process's Django's) environment: production-like settings."""
    env = dict(os.environ)
    for name in ("DEBUG",):
        env.pop(name, None)
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=f"bench-{secrets.token_urlsafe(50)}",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SITE_URL="http://127.0.0.1",
        DJANGO_SETTINGS_MODULE="config.settings",
        MB_VAR_DIR=str(var_dir),
    )
    return env


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    var_dir = BASE_DIR / "var" / "bench"
    var_dir.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    results = Results()
    progress = Progress()
    server: Gunicorn | None = None
    workspace_id: int | None = None
    django_ready = False

    busy = cpu.busy_share()
    print(
        f"Meterboard ingestion benchmark (HTTP through gunicorn; loopback only); {cores()} cores"
        + ("" if busy is None else f", {100 * busy:.0f}% busy before the start"),
        flush=True,
    )
    if busy is not None and busy > 0.15:
        print(
            "      NOTE: other processes are busy; they share the cores and make the figures noisy.",
            flush=True,
        )
    try:
        # 1. The database.
        progress.begin(1, "database", "choosing")
        target = database.choose(os.environ.get("DATABASE_URL"), var_dir, fresh=args.fresh_db)
        results.vendor = target.vendor
        env = bench_environment(target.url, var_dir)
        migrated = database.manage(BASE_DIR, env, "migrate", "--noinput")
        applied = sum(1 for line in migrated.splitlines() if line.strip().startswith("Applying"))
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)
        database.django_setup()
        django_ready = True
        where = database.masked(target.url) if target.vendor == "postgresql" else target.name
        progress.end(f"{target.vendor} at {where} ({target.note}; {applied} migration(s) applied)")
        pg_name = target.name if target.vendor == "postgresql" else None  # for the CPU accounting
        if target.vendor != "postgresql":
            print(
                "      NOTE: SQLite fallback: the figures below are NOT the PostgreSQL targets.", flush=True
            )

        # 2. Workspace and API key, through the management commands.
        slug = f"bench-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        progress.begin(2, "workspace", slug)
        database.manage(BASE_DIR, env, "create_workspace", slug, "--owner", OWNER_EMAIL)
        key_output = database.manage(BASE_DIR, env, "create_api_key", slug, "--name", "bench")
        lines = [line.strip() for line in key_output.splitlines() if line.strip()]
        if not lines:
            raise database.DatabaseError("create_api_key printed no secret")
        secret = lines[-1]
        workspace_id, _ = database.workspace_ids(slug)
        progress.end(f"workspace #{workspace_id}, API key {'_'.join(secret.split('_')[:2])}_...")
        database.close_connections()

        # 3. The server.
        server = Gunicorn(base_dir=BASE_DIR, env=env, workers=args.workers, log_path=var_dir / "gunicorn.log")
        progress.begin(3, "server", f"gunicorn config.wsgi:application, {args.workers} sync workers")
        ready = server.start()
        warm_factory = EventFactory(PREFIX_WARM, seed=seed + 1)
        warm = clients.post_batches(
            port=server.port,
            secret=secret,
            bodies=[batch_body(warm_factory.batch(size)) for size in (10, 1, 10, 1, 10, 1, 10, 1)],
            expected=[10, 1, 10, 1, 10, 1, 10, 1],
            connections=2,
        )
        if warm.failures:
            raise ServerError(
                "warm-up requests failed: " + "; ".join(warm.failures[:3]) + "\n" + server.log_tail()
            )
        progress.end(
            f"on 127.0.0.1:{server.port}, answered after {ready:.1f} s, warmed with {warm.requests} requests"
        )

        # 4. Batched.
        if args.batches:
            factory = EventFactory(PREFIX_BATCHED, seed=seed)
            bodies = [batch_body(factory.batch(args.batch_size)) for _ in range(args.batches)]
            progress.begin(
                4,
                "batched",
                f"{args.batches} x {args.batch_size:,} events over {args.batch_connections} connections",
            )
            before = cpu.snapshot(server.pid, pg_name)
            batched = clients.post_batches(
                port=server.port,
                secret=secret,
                bodies=bodies,
                expected=[args.batch_size] * args.batches,
                connections=args.batch_connections,
            )
            results.batched_cpu = cpu.usage(before, cpu.snapshot(server.pid, pg_name), batched.elapsed)
            results.batched = batched
            progress.end(
                f"{number(batched.events_per_second)} events/s, {batched.accepted:,} accepted in "
                f"{batched.elapsed:.2f} s, p50 {clients.percentile(batched.latencies, 0.5) * 1000:.0f} ms/request"
            )
            for failure in batched.failures[:5]:
                print(f"      FAILED {failure}", flush=True)
            if batched.failures:
                results.problems.append(f"batched: {len(batched.failures)} request(s) failed")
        else:
            Progress.line(4, "batched", "skipped (--batches 0)")

        # 5. Single events.
        if args.singles:
            connections = min(args.connections, args.singles)
            wrk = None
            if args.client in ("auto", "wrk"):
                wrk = clients.wrk_path(install=not args.no_install)
                if wrk is None and args.client == "wrk":
                    raise ServerError("--client wrk: wrk is not installed (Debian: apt-get install wrk)")
            tool = (
                "wrk"
                if wrk
                else "Python http.client" + (" (wrk not available)" if args.client == "auto" else "")
            )
            progress.begin(
                5,
                "single",
                f"{args.singles:,} requests (at most {args.seconds:g} s) over {connections} connections, {tool}",
            )
            before = cpu.snapshot(server.pid, pg_name)
            if wrk:
                start, end = occurred_window(datetime.now(UTC))
                singles = clients.singles_with_wrk(
                    wrk=wrk,
                    port=server.port,
                    secret=secret,
                    prefix=PREFIX_SINGLE,
                    total=args.singles,
                    connections=connections,
                    seconds=args.seconds,
                    window=(int(start.timestamp()), int(end.timestamp())),
                    out_dir=var_dir / "wrk",
                    seed=seed,
                )
            else:
                singles = clients.singles_with_python(
                    port=server.port,
                    secret=secret,
                    prefix=PREFIX_SINGLE,
                    total=args.singles,
                    connections=connections,
                    seconds=args.seconds,
                    seed=seed,
                )
            results.singles_cpu = cpu.usage(before, cpu.snapshot(server.pid, pg_name), singles.window)
            results.singles = singles
            progress.end(
                f"{number(singles.requests_per_second)} requests/s, {singles.answered:,} answered in "
                f"{singles.window:.2f} s (stopped by {singles.stopped_by}), p50 {singles.p(0.5):.1f} ms, "
                f"p99 {singles.p(0.99):.1f} ms"
            )
            for failure in singles.failures[:5]:
                print(f"      FAILED {failure}", flush=True)
            if singles.bad or (singles.failures and not singles.answered):
                results.problems.append(f"single: {singles.bad:,} request(s) not answered 200/accepted")
        else:
            Progress.line(5, "single", "skipped (--singles 0)")

        server.stop()  # graceful: requests in progress finish first

        # 6. Verify.
        progress.begin(6, "verify", "counting stored events")
        counts = database.stored_counts(workspace_id, (PREFIX_WARM, PREFIX_BATCHED, PREFIX_SINGLE))
        expected = {
            PREFIX_WARM: warm.accepted,
            PREFIX_BATCHED: results.batched.accepted if results.batched else 0,
            PREFIX_SINGLE: results.singles.ok if results.singles else 0,
        }
        mismatches = [
            f"{prefix}*: stored {counts[prefix]:,} != accepted {expected[prefix]:,}"
            for prefix in expected
            if counts[prefix] != expected[prefix]
        ]
        if counts["total"] != sum(counts[prefix] for prefix in expected):
            mismatches.append(f"{counts['total']:,} events in the workspace, not all from this run")
        if counts["rollups"] != counts["total"]:
            mismatches.append(
                f"rollups sum {counts['rollups']:,} events, the ledger holds {counts['total']:,}"
            )
        if mismatches:
            results.problems.extend(f"verify: {m}" for m in mismatches)
            progress.end("MISMATCH: " + "; ".join(mismatches))
        else:
            results.verified = (
                f"stored events = accepted in 200 answers (batched {counts[PREFIX_BATCHED]:,}, single "
                f"{counts[PREFIX_SINGLE]:,}, warm-up {counts[PREFIX_WARM]:,}); daily rollups sum to the same "
                f"{counts['total']:,}"
            )
            progress.end(f"{counts['total']:,} events stored = accepted; rollups agree")

        # 7. The COPY ceiling.
        if target.vendor != "postgresql":
            results.copy_note = "(PostgreSQL only)"
            Progress.line(7, "COPY", "skipped: the COPY ceiling is measured on PostgreSQL only")
        elif not args.copy_rows:
            results.copy_note = "(--copy-rows 0)"
            Progress.line(7, "COPY", "skipped (--copy-rows 0)")
        else:
            progress.begin(
                7, "COPY", f"{args.copy_rows:,} of this run's rows into a scratch usage_usageevent"
            )
            try:
                copied = database.copy_ceiling(workspace_id, args.copy_rows)
            except database.DatabaseError as exc:
                results.copy_note = f"({exc})"
                progress.end(f"skipped: {exc}")
            else:
                results.copy = copied
                progress.end(
                    f"{number(copied.rows_per_second)} rows/s ({copied.rows:,} rows in {copied.elapsed:.2f} s; "
                    f"{copied.indexes} indexes, {copied.foreign_keys} foreign keys, WAL-logged, incl. commit)"
                )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping", flush=True)
        results.problems.append("interrupted")
    except (database.DatabaseError, ServerError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        results.problems.append(str(exc).splitlines()[0])
    except Exception as exc:  # a bug, or a database error: show it, still stop and clean up
        print(file=sys.stderr)
        traceback.print_exc()
        results.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        if server is not None:
            server.stop()
        if workspace_id is not None and django_ready:
            if args.keep:
                Progress.line(8, "cleanup", f"kept workspace #{workspace_id} (--keep)")
            else:
                try:
                    database.cleanup(workspace_id)
                    Progress.line(
                        8, "cleanup", f"deleted this run's workspace #{workspace_id} and its events"
                    )
                except Exception as exc:  # report, never hide the figures behind a cleanup failure
                    Progress.line(
                        8,
                        "cleanup",
                        f"FAILED ({type(exc).__name__}: {exc}); delete workspace #{workspace_id} by hand",
                    )

    # The month-end close benchmark: a separate phase, after the server has stopped.
    closing = None
    if django_ready and "interrupted" not in results.problems:
        closing = close.run(args, results.vendor)
        results.problems.extend(closing.problems)

    if results.vendor:
        print()
        print(summary(results, args))
    if closing is not None:
        print()
        print(close.summary(closing))
    for problem in results.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if results.problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    if args.close_only:
        return close.standalone(args, bench_environment)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
