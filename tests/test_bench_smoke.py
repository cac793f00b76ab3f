"""The benchmarks at a tiny size, so that they cannot rot (issue 11, point 7): each command of
`python -m bench` runs for real (gunicorn, a Celery worker, COPY, the close) on the suite's test
database, exits 0 and prints every figure line of its table. The figures' values are not checked:
a few hundred events on a shared machine say nothing.

The bench is allowed the test database by name (MB_BENCH_ALLOW_DATABASE) and writes there only
within these tests, which are transactional (the database is emptied after each). Its scratch
folder (logs, the broker without Redis) is a temporary directory, removed after each test, and
every process it started must be gone by then. The close needs PostgreSQL (COPY): on SQLite its
test is skipped, saying so.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # seconds per command; each takes a few

# Tiny sizes: every phase runs, over a handful of requests and events.
TINY = {
    "ingest": ["--batches", "2", "--batch-size", "50", "--singles", "40", "--seconds", "10", "--connections", "2",
               "--copy-rows", "500", "--bare-seconds", "1", "--no-install", "--seed", "1"],
    "close": ["--close-workspaces", "5", "--close-events", "40"],
    "allowance": ["--seconds", "0.5", "--cold", "3", "--usage-events", "50", "--rounds", "1", "--ignore-targets",
                  "--no-collectstatic"],
    "overview": ["--sizes", "30,60", "--repeat", "1", "--cleanup"],
    "scale": ["--events", "3000", "--workspaces", "5", "--ingest-seconds", "0.5", "--batch-size", "100", "--repeat", "1"],
}  # fmt: skip
POSTGRES_ONLY = {"close": "the close benchmark needs PostgreSQL (COPY)",
                 "scale": "the scale benchmark needs PostgreSQL (month partitions)"}  # fmt: skip

N, MS, S = r"[\d,]+", r"[\d.]+ ms", r"[\d.]+ s"
VERDICT = r"(ok|MISSED|\(target is for PostgreSQL\))"
# Every line of each command's table that carries a figure (and its ratio to the ceiling/floor).
FIGURES = {
    "ingest": [
        r"ingestion on (postgresql|sqlite) \(\d+ cores\)\s+measured\s+target",
        rf"batched \(50/request\)\s+{N} ev/s\s+>= 10,000\s+{VERDICT}  \(p50 \d+ ms, p99 \d+ ms per request\)",
        rf"single event per request\s+{N} req/s\s+>= 500\s+{VERDICT}  \(p50 {MS}, p99 {MS}\)",
        "COPY",  # below: the ceilings on PostgreSQL, "skipped" on SQLite
        r"bare Django JSON view \(ceiling\).*",  # measured with wrk, "skipped" without it
        rf"verified: stored events = accepted in 200 answers \(batched 100, single {N}, warm-up 44\); "
        rf"daily rollups sum to the same {N}",
        rf"batched: CPU per 1,000 events: gunicorn {MS}.*",
        rf"single:  CPU per 1 request: gunicorn {MS}.*",
    ],
    "close": [
        r"month-end close on postgresql \(\d+ cores\)\s+measured\s+target",
        rf"dataset \(5 ws, 40 events\)\s+{S}\s+generated \(seed 1\)",
        rf"floor: one GROUP BY over raw events\s+{S}\s+\({N} groups\)",
        rf"same GROUP BY over daily rollups\s+{S}\s+\({N} groups\)",
        rf"period_close \(5 workspaces\)\s+{S}\s+<= 300 s\s+{VERDICT}  \([\d.]+× the floor; {MS} per workspace, "
        rf"{N} ws/s; {N} queries in all\)",
        rf"verified: 5 statements bill {N} units = the ledger; their usage lines sum to [\d.]+ = the floor GROUP BY",
    ],
    "allowance": [
        r"allowance & alerts on (postgresql|sqlite)( \+ Redis|, no Redis) \(\d+ cores\)\s+measured\s+target",
        rf"GET /allowance, 2 connections \((wrk|Python http.client)\)\s+p99 {MS}\s+<= 10 ms\s+{VERDICT}  "
        rf"\(p50 {MS}, {N} req/s, {N} calls\)",
        rf"GET /allowance, counters rebuilt\s+p99 {MS}\s+\(p50 {MS}: a cache miss sums the month's rollups\)",
        rf"blocked after the crossing event\s+{MS}\s+< 1 s\s+(ok \(the first call after the POST\)|MISSED)",
        rf"unblocked after raising the budget\s+{MS}\s+at once",
        rf"event-to-alert delay \(webhook, worker\)\s+max {MS}\s+< 60 s\s+(ok|MISSED)  \(p50 {MS}, 1 alerts\)",
        rf"allowance: CPU per 1 call: gunicorn {MS}.*",
    ],
    "overview": [
        r"overview server time on (postgresql|sqlite) \(\d+ cores\)\s+median\s+p95\s+best\s+queries\s+rollup rows",
        *[rf"{size} events, {page}\s+{MS}\s+{MS}\s+{MS}\s+\d+\s+{N}"
          for size in (30, 60) for page in ("this month", "last 12 months")],
        r"60 / 30 events: 2× the events, [\d.]+× the time \(the overview reads rollups, not events\)",
        r"Bench workspaces deleted\.",
    ],
    "scale": [
        r"at scale on postgresql \(\d+ cores\)\s+empty db\s+at scale\s+ratio\s+target",
        rf"events in the database\s+{N}\s+{N}",
        rf"ingestion: events_ingest in process, 100/call\s+{N} ev/s\s+{N} ev/s\s+[\d.]+×",
        rf"overview: GET / of the busiest workspace\s+{MS}\s+{MS}\s+[\d.]+×\s+<= 2×\s+(ok|MISSED)",
        rf"close of \d{{4}}-\d\d: 5 ws, {N} events\s+{S}\s+{S}\s+[\d.]+×\s+<= 2×\s+(ok|MISSED)",
        r"close of \d{4}-\d\d reads its partition \+ edges\s+[\d.]+% of rows\s+ok",
        rf"load: 3,000 events and their receipts in {S} \({N} events/s\); rollups {S}; VACUUM ANALYZE {S}; "
        r"[\d.]+ min in all",
        r"close of \d{4}-\d\d reads partition\(s\): \d{4}_\d\d \([\d,]+ rows\)(, \d{4}_\d\d \([\d,]+ rows\))*",
        r"ratios: at scale / empty database, same run \(ingestion: below 1 is slower\)",
    ],
}  # fmt: skip
COPY_LINES = {
    "postgresql": [rf"raw COPY ceiling\s+{N} rows/s\s*", rf"  batched events: share of it\s+[\d.]+%\s+>= 60%\s+{VERDICT}",
                   rf"server-side INSERT … SELECT\s+{N} rows/s\s+\(the database alone, no client\)"],
    "sqlite": [r"raw COPY ceiling\s+skipped\s+\(PostgreSQL only\)"],
}


def suite_database_url() -> str:
    """The suite's test database (pytest-django renamed it), as a URL for another process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def processes_with(marker: str) -> list[int]:
    """The processes whose environment holds `marker`: those the bench started (they inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass  # gone, or not ours to read
    return found


def run_bench(command: str, scratch: Path) -> subprocess.CompletedProcess:
    marker = f"MB_BENCH_VAR_DIR={scratch}"
    env = {
        **os.environ,
        "DATABASE_URL": suite_database_url(),
        "MB_BENCH_ALLOW_DATABASE": connection.settings_dict["NAME"],
        "REDIS_URL": settings.REDIS_URL,  # "" when the suite runs without Redis: so does the bench
        "MB_BENCH_VAR_DIR": str(scratch),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "bench", command, *TINY[command]]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the bench stops its servers and cleans up on SIGTERM
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        stderr += f"\n(timed out after {TIMEOUT} s)"
    if sys.platform.startswith("linux"):
        leftovers = processes_with(marker)
        for pid in leftovers:  # only processes this test's bench started: they carry its marker
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not leftovers, f"{command} left processes behind: {leftovers}\n{stdout}\n{stderr}"
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


@pytest.fixture
def migrated_data():
    """What the migrations seed and a transactional test's flush removes: the price book is put
    back by tests/conftest.py, the default plan (billing 0004) here; a bench database has both."""
    from django.apps import apps

    importlib.import_module("billing.migrations.0004_default_plan").load(apps, None)


@pytest.fixture
def scratch():
    path = Path(tempfile.mkdtemp(prefix="mb-bench-smoke-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", list(TINY))
def test_benchmark_runs_and_prints_its_figures(command, scratch, migrated_data):
    if command in POSTGRES_ONLY and connection.vendor != "postgresql":
        pytest.skip(f"{POSTGRES_ONLY[command]}; this suite runs on SQLite")
    static_before = set(os.listdir(settings.STATIC_ROOT)) if os.path.isdir(settings.STATIC_ROOT) else set()

    done = run_bench(command, scratch)

    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, output
    assert "PROBLEM:" not in done.stderr, output
    assert not re.search(r"^\[\d+/\d+\] .* FAILED \(", done.stdout, re.MULTILINE), output  # a step, e.g. the cleanup
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    patterns = [p for pattern in FIGURES[command] for p in (COPY_LINES[connection.vendor] if pattern == "COPY" else [pattern])]
    for pattern in patterns:
        assert any(re.fullmatch(pattern, line) for line in lines), f"no line matches {pattern!r}\n{output}"
    static_after = set(os.listdir(settings.STATIC_ROOT)) if os.path.isdir(settings.STATIC_ROOT) else set()
    assert static_after <= static_before, f"{command} wrote {sorted(static_after - static_before)} into staticfiles/"


def test_scale_refuses_sqlite_saying_what_to_set(scratch):
    """The scale benchmark is PostgreSQL's: on SQLite it says to set DATABASE_URL, exits 2 and
    makes no database file."""
    database = scratch / "scale.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "MB_BENCH_VAR_DIR": str(scratch)}
    done = subprocess.run([sys.executable, "-m", "bench", "scale", *TINY["scale"]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2, done
    assert "PostgreSQL only" in done.stderr and "set DATABASE_URL=postgres://" in done.stderr, done.stderr
    assert not database.exists()


def test_all_runs_the_four_in_order_with_the_makefile_arguments(capsys):
    """`make bench` = `python -m bench all $(BENCH_ARGS) --allowance-args='$(ALLOWANCE_ARGS)'
    --overview-args='$(OVERVIEW_ARGS)'`: BENCH_ARGS go to ingestion and the close (as they went to
    bench/run.py), the others to their command."""
    from bench.__main__ import main

    assert main(["all", "--dry-run", "--seconds", "5", "--close-workspaces", "0", "--fresh-db",
                 "--allowance-args=--seconds 3 --keep", "--overview-args="]) == 0  # fmt: skip
    commands = [line.split(" -m bench ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert commands == [
        "ingest --seconds 5.0 --fresh-db",
        "close --close-workspaces 0",
        "allowance --seconds 3 --keep",
        "overview",
    ]
    assert main(["all", "--dry-run", "--close-only"]) == 0
    commands = [line.split(" -m bench ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert commands == ["close", "allowance", "overview"]
    with pytest.raises(SystemExit):  # the others' options are checked before anything runs
        main(["all", "--dry-run", "--overview-args=--sizes many"])
