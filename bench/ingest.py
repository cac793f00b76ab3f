"""Ingestion throughput over the real HTTP stack: `python -m bench ingest` (options: --help).

Runs gunicorn (config.wsgi, 2 sync workers on 127.0.0.1) against the database bench/environment.py
chooses (DATABASE_URL, else meterboard_bench on the local PostgreSQL, else a SQLite file: figures
that say nothing about the PostgreSQL targets). Phases:

  1. database   choose it, create it if needed, `manage.py migrate`
  2. workspace  a new workspace and API key per run (`create_workspace`, `create_api_key`)
  3. server     gunicorn, waited for until it answers; stopped at the end, also on errors/Ctrl-C
  4. batched    POST /api/v1/events with 1,000 events per request over 2 connections: events/s
  5. single     one event per request over a few connections (wrk when present): requests/s, p50/p99;
                in --rounds rounds (3), each followed by a round of load on the bare view (step 7)
  6. verify     the events stored equal the events the 200 answers accepted; the rollups agree
  7. bare view  the framework's ceiling: a bare Django JSON view (bench/bare.py) on the same gunicorn
                settings, under the same wrk load; single events are judged by their share of it,
                the median of the rounds' shares, each round's pair measured seconds apart so that a
                machine whose speed drifts during the run moves both figures of a pair alike
  8. COPY       the raw PostgreSQL COPY rate of the same rows into a scratch copy of the table, and a
                server-side INSERT … SELECT of them: the database's ceilings, and the batched rate's
                share of the COPY (bench/ceilings.py)
  9. cleanup    the run's workspace and events are deleted (--keep to keep them)

Then a summary table, with where the CPU went in each load phase (gunicorn, PostgreSQL, the load
generator, other processes: Linux /proc), which says both where to optimise and whether something
else on the machine skewed the figures. Only 127.0.0.1 is ever contacted; every loop is bounded by
a count and the single-event phase also by --seconds.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import ceilings, clients, cpu, environment, report, workspaces
from .data import EventFactory, batch_body, occurred_window
from .report import Steps, number, percentile, say, table
from .server import Gunicorn, ServerError

HELP = "ingestion throughput over HTTP (gunicorn), with PostgreSQL's raw COPY rate as the ceiling"
EPILOG = ("Quick run: python -m bench ingest --batches 10 --singles 1000 --seconds 5 --copy-rows 20000")
BATCHED_TARGET = 10_000  # events/s, on PostgreSQL, 2 cores
SINGLE_TARGET = 500  # requests/s, on PostgreSQL, 2 cores
# The targets that hold on any machine: shares of the ceilings measured in the same run (issue 12).
SINGLE_SHARE_OF_BARE_VIEW = 0.20
BATCHED_SHARE_OF_COPY = 0.60
SINGLE_P99_MS = 20.0
OWNER_EMAIL = "bench@example.com"
BARE_SCRIPT = Path(__file__).resolve().parent / "bare.lua"
PREFIX_WARM, PREFIX_BATCHED, PREFIX_SINGLE = "w-", "b-", "s-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--batches", type=int, default=60, help="batched requests to send (default 60)")
    add("--batch-size", type=int, default=1000, help="events per batch (default 1000, the API's maximum)")
    add("--batch-connections", type=int, default=2, help="concurrent connections, batched (default 2)")
    add("--singles", type=int, default=10_000,
        help="single-event requests (default 10000; the phase also ends after --seconds)")
    add("--seconds", type=float, default=30, help="time limit of the single-event phase (default 30)")
    add("--connections", type=int, default=4, help="concurrent connections, single events (default 4)")
    add("--bare-seconds", type=float, default=10, help="seconds of load on the bare view, the ceiling (default 10)")
    add("--rounds", type=int, default=3,
        help="single-event and bare-view rounds, alternating (default 3; needs wrk): the share is their median")
    add("--copy-rows", type=int, default=100_000, help="rows for the COPY ceiling, 0 to skip (default 100000)")
    add("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    add("--client", choices=("auto", "wrk", "python"), default="auto",
        help="single-event load generator: wrk when available (default), or Python")
    add("--no-install", action="store_true", help="never apt-get install wrk")
    add("--keep", action="store_true", help="keep the run's workspace and events")
    add("--seed", type=int, default=None, help="seed of the event generator (default: random)")
    environment.add_fresh_db(parser)  # fmt: skip


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
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


# --- Output -------------------------------------------------------------------------------------


@dataclass
class Results:
    vendor: str = ""
    batched: clients.BatchRun | None = None
    singles: clients.SinglesRun | None = None
    copy: ceilings.CopyRun | None = None
    bare: clients.WrkSummary | None = None
    bare_note: str = ""
    shares: list[float] = field(default_factory=list)  # single events / bare view, per round
    copy_note: str = ""
    batched_cpu: cpu.Usage | None = None
    singles_cpu: cpu.Usage | None = None
    verified: str = ""
    problems: list[str] = field(default_factory=list)


def summary(results: Results, args: argparse.Namespace) -> str:
    on_postgres = results.vendor == "postgresql"
    rows = [(f"ingestion on {results.vendor} ({cpu.cores()} cores)", "measured", "target", "")]

    def verdict(value: float, target: float) -> str:
        if not on_postgres:
            return "(target is for PostgreSQL)"
        return "ok" if value >= target else "MISSED"

    batched, singles, copied = results.batched, results.singles, results.copy
    label = f"batched ({args.batch_size:,}/request)"
    if batched is not None and batched.requests:
        rows.append((label, f"{number(batched.events_per_second)} ev/s", f">= {BATCHED_TARGET:,}",
                     verdict(batched.events_per_second, BATCHED_TARGET)
                     + f"  (p50 {percentile(batched.latencies, 0.5) * 1000:.0f} ms,"
                     f" p99 {percentile(batched.latencies, 0.99) * 1000:.0f} ms per request)"))  # fmt: skip
    else:
        rows.append((label, "not run", f">= {BATCHED_TARGET:,}", ""))
    if singles is not None and singles.answered:
        rows.append(("single event per request", f"{number(singles.requests_per_second)} req/s",
                     f">= {SINGLE_TARGET:,}", verdict(singles.requests_per_second, SINGLE_TARGET)
                     + f"  (p50 {singles.p(0.5):.1f} ms, p99 {singles.p(0.99):.1f} ms)"))  # fmt: skip
    else:
        rows.append(("single event per request", "not run", f">= {SINGLE_TARGET:,}", ""))
    bare = results.bare
    if bare is not None and bare.per_second:
        rows.append(("bare Django JSON view (ceiling)", f"{number(bare.per_second)} req/s", "",
                     f"(p99 {bare.p99_ms:.1f} ms)"))  # fmt: skip
        if singles is not None and singles.answered:
            shares = results.shares or [singles.requests_per_second / bare.per_second]
            share = statistics.median(shares)
            p99 = singles.p(0.99)
            ok = share >= SINGLE_SHARE_OF_BARE_VIEW and p99 <= SINGLE_P99_MS
            rounds = f"median of {len(shares)} rounds: " + ", ".join(f"{100 * s:.1f}%" for s in shares) + "; " \
                if len(shares) > 1 else ""
            rows.append(("  single events: share of it", f"{100 * share:.1f}%",
                         f">= {100 * SINGLE_SHARE_OF_BARE_VIEW:.0f}%",
                         ("ok" if ok else "MISSED") + f"  ({rounds}p99 {p99:.1f} ms <= {SINGLE_P99_MS:.0f} ms)"))  # fmt: skip
    else:
        rows.append(("bare Django JSON view (ceiling)", "skipped", "", results.bare_note))
    if copied is not None:
        rows.append(("raw COPY ceiling", f"{number(copied.rows_per_second)} rows/s", "", ""))
        if batched is not None and batched.accepted and copied.rows_per_second:
            share = batched.events_per_second / copied.rows_per_second
            rows.append(("  batched events: share of it", f"{100 * share:.1f}%", f">= {100 * BATCHED_SHARE_OF_COPY:.0f}%",
                         "ok" if share >= BATCHED_SHARE_OF_COPY else "MISSED"))  # fmt: skip
        if copied.insert_rows_per_second:
            rows.append(("server-side INSERT … SELECT", f"{number(copied.insert_rows_per_second)} rows/s", "",
                         "(the database alone, no client)"))  # fmt: skip
    else:
        rows.append(("raw COPY ceiling", "skipped", "", results.copy_note))
    lines = table(rows, (41, 16, 12))
    if results.verified:
        lines.append(f"verified: {results.verified}")
    if results.batched_cpu and batched is not None and batched.accepted:
        lines.append("batched: " + results.batched_cpu.describe(batched.accepted, 1000, "events", postgres=on_postgres))
    if results.singles_cpu and singles is not None and singles.answered:
        lines.append("single:  " + results.singles_cpu.describe(singles.answered, 1, "request", postgres=on_postgres))
    if not on_postgres:
        lines.append("NOTE: SQLite fallback. These figures are NOT comparable with the PostgreSQL targets.")
    return "\n".join(lines)


# --- The run ------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    results = Results()
    steps = Steps(9)
    server: Gunicorn | None = None
    workspace_id: int | None = None
    django_ready = False

    busy = cpu.busy_share()
    say(f"Meterboard ingestion benchmark (HTTP through gunicorn; loopback only); {cpu.cores()} cores"
        + ("" if busy is None else f", {100 * busy:.0f}% busy before the start"))  # fmt: skip
    if busy is not None and busy > 0.15:
        say("      NOTE: other processes are busy; they share the cores and make the figures noisy.")
    try:
        # 1. The database.
        steps.begin(1, "database", "choosing")
        bench = environment.select(fresh=args.fresh_db)
        results.vendor = bench.vendor
        applied = bench.migrate()
        bench.activate()
        django_ready = True
        steps.end(f"{bench.vendor} at {bench.where} ({bench.target.note}; {applied} migration(s) applied)")
        if bench.vendor != "postgresql":
            say("      NOTE: SQLite fallback: the figures below are NOT the PostgreSQL targets.")

        # 2. Workspace and API key, through the management commands.
        slug = f"bench-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        steps.begin(2, "workspace", slug)
        workspace_id, (secret,) = workspaces.create(bench, slug, OWNER_EMAIL, ("bench",))
        steps.end(f"workspace #{workspace_id}, API key {'_'.join(secret.split('_')[:2])}_...")
        environment.close_connections()

        # 3. The server.
        server = Gunicorn(env=bench.env, workers=args.workers, log_path=bench.var_dir / "gunicorn.log")
        steps.begin(3, "server", f"gunicorn config.wsgi:application, {args.workers} sync workers")
        ready = server.start()
        warm_factory = EventFactory(PREFIX_WARM, seed=seed + 1)
        sizes = [10, 1, 10, 1, 10, 1, 10, 1]
        warm = clients.post_batches(port=server.port, secret=secret, expected=sizes, connections=2,
                                    bodies=[batch_body(warm_factory.batch(size)) for size in sizes])  # fmt: skip
        if warm.failures:
            raise ServerError("warm-up requests failed: " + "; ".join(warm.failures[:3]) + "\n" + server.log_tail())
        steps.end(f"on 127.0.0.1:{server.port}, answered after {ready:.1f} s, warmed with {warm.requests} requests")

        batched_phase(args, steps, server, secret, seed, bench.postgres, results)
        rounds = singles_in_rounds(args, steps, server, secret, seed, bench, results)
        if not rounds:
            singles_phase(args, steps, server, secret, seed, bench, results)
        server.stop()  # graceful: requests in progress finish first
        verify_phase(steps, workspace_id, warm.accepted, results)
        if not rounds:
            bare_phase(args, steps, bench, results)
        else:
            bare = results.bare
            steps.line(7, "bare view", f"measured in step 5's {args.rounds} rounds: {number(bare.per_second)} "
                       f"requests/s in all, p99 {bare.p99_ms:.1f} ms")  # fmt: skip
        copy_phase(args, steps, workspace_id, results)
    except KeyboardInterrupt:
        say("\ninterrupted: stopping")
        results.problems.append("interrupted")
    except (environment.DatabaseError, ServerError) as exc:
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
                steps.line(9, "cleanup", f"kept workspace #{workspace_id} (--keep)")
            else:
                try:
                    workspaces.delete(workspace_id)
                    steps.line(9, "cleanup", f"deleted this run's workspace #{workspace_id} and its events")
                except Exception as exc:  # report, never hide the figures behind a cleanup failure
                    steps.line(9, "cleanup",
                               f"FAILED ({type(exc).__name__}: {exc}); delete workspace #{workspace_id} by hand")  # fmt: skip

    if results.vendor:
        say()
        say(summary(results, args))
    return report.problems(results.problems)


def batched_phase(args, steps: Steps, server: Gunicorn, secret: str, seed: int, pg_name, results: Results) -> None:
    """4. Batches of --batch-size events over --batch-connections connections."""
    if not args.batches:
        steps.line(4, "batched", "skipped (--batches 0)")
        return
    factory = EventFactory(PREFIX_BATCHED, seed=seed)
    bodies = [batch_body(factory.batch(args.batch_size)) for _ in range(args.batches)]
    steps.begin(4, "batched", f"{args.batches} x {args.batch_size:,} events over {args.batch_connections} connections")
    before = cpu.snapshot(server.pid, pg_name)
    batched = clients.post_batches(port=server.port, secret=secret, bodies=bodies,
                                   expected=[args.batch_size] * args.batches, connections=args.batch_connections)  # fmt: skip
    results.batched_cpu = cpu.usage(before, cpu.snapshot(server.pid, pg_name), batched.elapsed)
    results.batched = batched
    steps.end(f"{number(batched.events_per_second)} events/s, {batched.accepted:,} accepted in "
              f"{batched.elapsed:.2f} s, p50 {percentile(batched.latencies, 0.5) * 1000:.0f} ms/request")  # fmt: skip
    for failure in batched.failures[:5]:
        say(f"      FAILED {failure}")
    if batched.failures:
        results.problems.append(f"batched: {len(batched.failures)} request(s) failed")


def singles_phase(args, steps: Steps, server: Gunicorn, secret: str, seed: int, bench, results: Results) -> None:
    """5. One event per request, with wrk when there is one, else Python processes."""
    if not args.singles:
        steps.line(5, "single", "skipped (--singles 0)")
        return
    connections = min(args.connections, args.singles)
    wrk = None
    if args.client in ("auto", "wrk"):
        wrk = clients.wrk_path(install=not args.no_install)
        if wrk is None and args.client == "wrk":
            raise ServerError("--client wrk: wrk is not installed (Debian: apt-get install wrk)")
    tool = "wrk" if wrk else "Python http.client" + (" (wrk not available)" if args.client == "auto" else "")
    steps.begin(5, "single",
                f"{args.singles:,} requests (at most {args.seconds:g} s) over {connections} connections, {tool}")  # fmt: skip
    before = cpu.snapshot(server.pid, bench.postgres)
    common = dict(port=server.port, secret=secret, prefix=PREFIX_SINGLE, total=args.singles,
                  connections=connections, seconds=args.seconds, seed=seed)  # fmt: skip
    if wrk:
        start, end = occurred_window(datetime.now(UTC))
        singles = clients.singles_with_wrk(wrk=wrk, window=(int(start.timestamp()), int(end.timestamp())),
                                           out_dir=bench.var_dir / "wrk", **common)  # fmt: skip
    else:
        singles = clients.singles_with_python(**common)
    results.singles_cpu = cpu.usage(before, cpu.snapshot(server.pid, bench.postgres), singles.window)
    results.singles = singles
    steps.end(f"{number(singles.requests_per_second)} requests/s, {singles.answered:,} answered in "
              f"{singles.window:.2f} s (stopped by {singles.stopped_by}), p50 {singles.p(0.5):.1f} ms, "
              f"p99 {singles.p(0.99):.1f} ms")  # fmt: skip
    for failure in singles.failures[:5]:
        say(f"      FAILED {failure}")
    if singles.bad or (singles.failures and not singles.answered):
        results.problems.append(f"single: {singles.bad:,} request(s) not answered 200/accepted")


def singles_in_rounds(args, steps: Steps, server: Gunicorn, secret: str, seed: int, bench, results: Results) -> bool:
    """5 and 7 together: --rounds rounds of single events, each followed by a round of load on the
    bare view (its own gunicorn, started beside the app's, idle while the other works). False when
    they cannot alternate (no wrk, one round, a phase skipped): then they run apart, as before."""
    if args.rounds <= 1 or not args.singles or args.client == "python":
        return False
    wrk = clients.wrk_path(install=not args.no_install)
    if wrk is None:
        return False
    connections = min(args.connections, args.singles)
    steps.begin(5, "single", f"{args.singles:,} requests (at most {args.seconds:g} s) over {connections} connections, "
                f"wrk, in {args.rounds} rounds each followed by {args.bare_seconds / args.rounds:.0f} s on the bare view")  # fmt: skip
    bare = Gunicorn(env=bench.env, workers=args.workers, log_path=bench.var_dir / "gunicorn-bare.log",
                    app="bench.bare:application", ready_path="/bare/events")  # fmt: skip
    runs: list[clients.SinglesRun] = []
    usages: list[cpu.Usage] = []
    ceilings: list[clients.WrkSummary] = []
    try:
        bare.start()
        for number_ in range(args.rounds):
            quota = args.singles // args.rounds + (1 if number_ < args.singles % args.rounds else 0)
            before = cpu.snapshot(server.pid, bench.postgres)
            start, end = occurred_window(datetime.now(UTC))
            run = clients.singles_with_wrk(
                wrk=wrk, port=server.port, secret=secret, prefix=f"{PREFIX_SINGLE}{number_}-", total=quota,
                connections=connections, seconds=args.seconds / args.rounds, seed=seed + number_,
                window=(int(start.timestamp()), int(end.timestamp())), out_dir=bench.var_dir / f"wrk-{number_}",
            )  # fmt: skip
            usage = cpu.usage(before, cpu.snapshot(server.pid, bench.postgres), run.window)
            ceiling = clients.wrk_timed(wrk, f"http://127.0.0.1:{bare.port}/bare/events", connections=connections,
                                        seconds=args.bare_seconds / args.rounds, script=BARE_SCRIPT)  # fmt: skip
            runs.append(run)
            ceilings.append(ceiling)
            if usage is not None:
                usages.append(usage)
            if ceiling.per_second:
                results.shares.append(run.requests_per_second / ceiling.per_second)
            say(("\n" if number_ == 0 else "") + f"      round {number_ + 1}: {number(run.requests_per_second)} "
                f"requests/s, bare view {number(ceiling.per_second)} requests/s: {100 * results.shares[-1]:.1f}%")  # fmt: skip
    finally:
        bare.stop()
    singles = clients.SinglesRun(tool="wrk", connections=connections)
    for run in runs:
        singles.answered += run.answered
        singles.ok += run.ok
        singles.bad += run.bad
        singles.window += run.window
        singles.latencies_us += run.latencies_us
        singles.failures += run.failures
    singles.stopped_by = ", ".join(sorted({run.stopped_by for run in runs}))
    results.singles = singles
    results.singles_cpu = cpu.combined(usages)
    seconds = sum(c.requests / c.per_second for c in ceilings if c.per_second)
    requests = sum(c.requests for c in ceilings)
    results.bare = clients.WrkSummary(
        p50_ms=statistics.median(c.p50_ms for c in ceilings), p99_ms=max(c.p99_ms for c in ceilings),
        requests=requests, per_second=requests / seconds if seconds else 0.0,
    )  # fmt: skip
    say(f"      in all: {number(singles.requests_per_second)} requests/s, {singles.answered:,} answered in "
        f"{singles.window:.2f} s, p50 {singles.p(0.5):.1f} ms, p99 {singles.p(0.99):.1f} ms")  # fmt: skip
    for failure in singles.failures[:5]:
        say(f"      FAILED {failure}")
    if singles.bad or (singles.failures and not singles.answered):
        results.problems.append(f"single: {singles.bad:,} request(s) not answered 200/accepted")
    return True


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


def verify_phase(steps: Steps, workspace_id: int, warmed: int, results: Results) -> None:
    """6. The events stored are the events the 200 answers accepted; the rollups sum to them."""
    steps.begin(6, "verify", "counting stored events")
    counts = stored_counts(workspace_id, (PREFIX_WARM, PREFIX_BATCHED, PREFIX_SINGLE))
    expected = {
        PREFIX_WARM: warmed,
        PREFIX_BATCHED: results.batched.accepted if results.batched else 0,
        PREFIX_SINGLE: results.singles.ok if results.singles else 0,
    }
    mismatches = [f"{prefix}*: stored {counts[prefix]:,} != accepted {expected[prefix]:,}"
                  for prefix in expected if counts[prefix] != expected[prefix]]  # fmt: skip
    if counts["total"] != sum(counts[prefix] for prefix in expected):
        mismatches.append(f"{counts['total']:,} events in the workspace, not all from this run")
    if counts["rollups"] != counts["total"]:
        mismatches.append(f"rollups sum {counts['rollups']:,} events, the ledger holds {counts['total']:,}")
    if mismatches:
        results.problems.extend(f"verify: {m}" for m in mismatches)
        steps.end("MISMATCH: " + "; ".join(mismatches))
    else:
        results.verified = (
            f"stored events = accepted in 200 answers (batched {counts[PREFIX_BATCHED]:,}, single "
            f"{counts[PREFIX_SINGLE]:,}, warm-up {counts[PREFIX_WARM]:,}); daily rollups sum to the same "
            f"{counts['total']:,}"
        )
        steps.end(f"{counts['total']:,} events stored = accepted; rollups agree")


def bare_phase(args, steps: Steps, bench, results: Results) -> None:
    """7. The framework's ceiling: a bare Django JSON view, same gunicorn settings, same wrk load."""
    wrk = clients.wrk_path(install=False) if args.client in ("auto", "wrk") else None
    if not args.singles or wrk is None:
        results.bare_note = "(no single-event phase)" if not args.singles else "(needs wrk)"
        steps.line(7, "bare view", f"skipped {results.bare_note}")
        return
    seconds = args.bare_seconds
    steps.begin(7, "bare view", f"gunicorn bench.bare:application, {args.workers} sync workers, wrk {args.connections} "
                                f"connections, {seconds:g} s")  # fmt: skip
    bare = Gunicorn(env=bench.env, workers=args.workers, log_path=bench.var_dir / "gunicorn-bare.log",
                    app="bench.bare:application", ready_path="/bare/events")  # fmt: skip
    try:
        bare.start()
        results.bare = clients.wrk_timed(wrk, f"http://127.0.0.1:{bare.port}/bare/events", connections=args.connections,
                                         seconds=seconds, script=BARE_SCRIPT)  # fmt: skip
    except ServerError as exc:  # the ceiling is missing, the other figures still stand
        results.bare_note = "(failed)"
        results.problems.append(f"bare view: {str(exc).splitlines()[0]}")
        steps.end("failed: " + str(exc).splitlines()[0])
        return
    finally:
        bare.stop()
    steps.end(f"{number(results.bare.per_second)} requests/s, p99 {results.bare.p99_ms:.1f} ms")


def copy_phase(args, steps: Steps, workspace_id: int, results: Results) -> None:
    """8. The ceilings: PostgreSQL's raw COPY of --copy-rows of this run's rows, and the same rows by
    a server-side INSERT … SELECT."""
    if results.vendor != "postgresql":
        results.copy_note = "(PostgreSQL only)"
        steps.line(8, "COPY", "skipped: the COPY ceiling is measured on PostgreSQL only")
    elif not args.copy_rows:
        results.copy_note = "(--copy-rows 0)"
        steps.line(8, "COPY", "skipped (--copy-rows 0)")
    else:
        steps.begin(8, "COPY", f"{args.copy_rows:,} of this run's rows into a scratch usage_usageevent")
        try:
            copied = ceilings.copy_ceiling(workspace_id, args.copy_rows)
        except environment.DatabaseError as exc:
            results.copy_note = f"({exc})"
            steps.end(f"skipped: {exc}")
        else:
            results.copy = copied
            steps.end(f"{number(copied.rows_per_second)} rows/s ({copied.rows:,} rows in {copied.elapsed:.2f} s; "
                      f"{copied.indexes} indexes, {copied.foreign_keys} foreign keys, WAL-logged, incl. commit); "
                      f"INSERT … SELECT {number(copied.insert_rows_per_second)} rows/s")  # fmt: skip
