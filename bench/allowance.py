#!/usr/bin/env python
"""The hard limit and budget alerts, measured over HTTP: `python bench/allowance.py` (--help).

Runs the real stack: gunicorn (config.wsgi, sync workers) and a Celery worker, on the database
bench/database.py chooses (DATABASE_URL, else meterboard_bench on the local PostgreSQL, else a
SQLite file under var/bench/) and on Redis (REDIS_URL, else database 12 of the local Redis when it
answers, else none: the embedded broker, and the allowance reads the rollups). Phases:

  1. database   choose it, create it if needed, `manage.py migrate`
  2. servers    gunicorn, a Celery worker, and a local HTTP receiver for webhooks
  3. workspace  a new workspace and two API keys; a month of realistic usage (POST /events);
                a workspace hard-limit budget far above it
  4. allowance  GET /api/v1/allowance over --connections connections for --seconds (wrk when
                installed: it takes next to no CPU from the server; else Python): p50/p99 with
                the month-to-date counters cached (target p99 <= 10 ms, 2 cores); then, one at a
                time, with the counters dropped before each call (rebuilt from the rollups)
  5. blocking   the budget is set just above the spend; one event crosses it: time from the 200
                of that POST to the first allowed:false (target < 1 s, no worker involved); then
                the budget is raised: time to allowed:true
  6. alerts     a $100 budget on the second key, thresholds every 10 %, a webhook to the receiver:
                --rounds times, post $10 and time until the signed alert arrives (target < 60 s)
  7. cleanup    the run's workspace and everything in it is deleted (--keep to keep it)

Only 127.0.0.1 is contacted; every loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench import clients, cpu, database  # noqa: E402
from bench.events import EventFactory, batch_body  # noqa: E402
from bench.server import Gunicorn, ServerError  # noqa: E402

ALLOWANCE_P99_TARGET_MS = 10.0
BLOCK_TARGET_S = 1.0
ALERT_TARGET_S = 60.0
BENCH_REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own (tests use 15)
OWNER_EMAIL = "bench@example.com"
PHASES = 7


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/allowance.py",
        description="Meterboard's allowance endpoint (hard limits) and event-to-alert delay, over HTTP.",
    )
    parser.add_argument("--seconds", type=float, default=15, help="allowance calls for this long, counters cached (default 15)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator for the cached phase: wrk when installed (default), or Python")
    parser.add_argument("--cold", type=int, default=300, help="allowance calls with the counters dropped first (default 300)")
    parser.add_argument("--connections", type=int, default=2, help="concurrent allowance callers (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--usage-events", type=int, default=20_000, help="this month's usage loaded first (default 20000)")
    parser.add_argument("--rounds", type=int, default=10, help="alerts to time, one threshold each (1-10, default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the run's workspace")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be 1 to 10")
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    for name in ("connections", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


# --- Small parts ----------------------------------------------------------------------------------


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def redis_url() -> str:
    if "REDIS_URL" in os.environ:
        return os.environ["REDIS_URL"]
    import redis

    try:
        redis.Redis.from_url(BENCH_REDIS_URL, socket_connect_timeout=2).ping()
        return BENCH_REDIS_URL
    except (redis.RedisError, OSError):
        return ""


def environment(database_url: str, redis: str, var_dir: Path) -> dict[str, str]:
    """Production-like settings for gunicorn and the worker; webhooks may reach 127.0.0.1 (the
    receiver) and e-mails stay in memory."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG",)}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis,
        SECRET_KEY=f"bench-{secrets.token_urlsafe(50)}",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SITE_URL="http://127.0.0.1",
        DJANGO_SETTINGS_MODULE="config.settings",
        MB_VAR_DIR=str(var_dir),
        WEBHOOK_ALLOW_PRIVATE="1",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        LOG_LEVEL="WARNING",
    )
    return env


class Api:
    """One keep-alive-when-possible http.client connection to gunicorn, JSON in and out."""

    def __init__(self, port: int, secret: str):
        self.port = port
        self.headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):  # gunicorn's sync workers close every connection: reconnect once
            try:
                self.connection.request(method, path, body=payload, headers=self.headers)
                response = self.connection.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else {})
            except (OSError, http.client.HTTPException):
                self.connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
        got, answer = self.call(method, path, body)
        if got != status:
            raise ServerError(f"{method} {path} answered {got}: {answer}")
        return answer


@dataclass
class Receiver:
    """A local webhook receiver: remembers when each alert arrived."""

    arrivals: list[tuple[float, dict]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.arrivals.append((time.monotonic(), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def wait_for_threshold(self, threshold: int, deadline: float) -> float | None:
        while time.monotonic() < deadline:
            with self.lock:
                for at, body in self.arrivals:
                    if body.get("threshold") == threshold and body.get("type") == "budget.threshold_reached":
                        return at
            time.sleep(0.005)
        return None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class CeleryWorker:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path, self.process = env, log_path, None

    def start(self, ready_within: float = 60) -> float:
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BASE_DIR / ".venv" / "bin" / "celery"), "-A", "config", "worker", "--loglevel=INFO",
                 "-Q", "celery,webhooks", "--concurrency=2", "-n", f"bench-allowance-{os.getpid()}@localhost", "--without-gossip",
                 "--without-mingle"],
                cwd=BASE_DIR, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        while time.monotonic() - started < ready_within:
            if self.process.poll() is not None:
                raise ServerError(f"the Celery worker exited:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            if "ready." in self.log_path.read_text(errors="replace"):
                return time.monotonic() - started
            time.sleep(0.1)
        raise ServerError("the Celery worker was not ready in time")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this bench started, by its id
            process.wait(timeout=10)


def time_allowance(
    port: int, secret: str, count: int | None, connections: int, *, until: float | None = None, before_each=None
) -> tuple[list[float], float]:
    """`count` GET /allowance (or as many as fit before `until`, time.monotonic()) over
    `connections` threads; the latencies (s) and the elapsed time."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = iter(range(count if count is not None else 10**9))
    failures: list[str] = []

    def caller() -> None:
        api = Api(port, secret)
        while until is None or time.monotonic() < until:
            with lock:
                if next(remaining, None) is None:
                    return
            if before_each is not None:
                before_each()
            started = time.perf_counter()
            status, answer = api.call("GET", "/api/v1/allowance")
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if status != 200 or "allowed" not in answer:
                    failures.append(f"{status}: {answer}")

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise ServerError(f"{len(failures)} allowance call(s) failed, e.g. {failures[0]}")
    return latencies, time.perf_counter() - started


@dataclass
class Latency:
    tool: str
    p50_ms: float
    p99_ms: float
    requests: int
    per_second: float


_WRK_SCRIPT = 'wrk.headers["Authorization"] = "Bearer " .. os.getenv("MB_BENCH_API_KEY")\n'
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def allowance_with_wrk(wrk: str, port: int, secret: str, *, connections: int, seconds: float, out_dir: Path) -> Latency:
    """wrk (C: next to no CPU taken from the server) GETs /allowance for `seconds`; its own latency
    percentiles. The key travels in the environment, not on the command line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    script = out_dir / "allowance.lua"
    script.write_text(_WRK_SCRIPT)
    result = subprocess.run(
        [wrk, "-t", str(connections), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/api/v1/allowance"],
        env={**os.environ, "MB_BENCH_API_KEY": secret}, capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    out = result.stdout

    def figure(label: str) -> float:
        found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not found:
            raise ServerError(f"wrk printed no {label} latency:\n{out}{result.stderr}")
        return float(found.group(1)) * _UNITS[found.group(2)]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad or result.returncode:
        raise ServerError(f"wrk: {bad.group(0) if bad else 'exit ' + str(result.returncode)}\n{out}{result.stderr}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return Latency("wrk", figure("50%"), figure("99%"), requests, rate)


def wait_allowed(api: Api, allowed: bool, seconds: float) -> float | None:
    """Seconds until /allowance answers `allowed`, polling; None if it never does in `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if api.ok("GET", "/api/v1/allowance")["allowed"] is allowed:
            return time.monotonic() - started
    return None


def training(prefix: str, count: int) -> dict:
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"events": [{"event_id": f"{prefix}-{secrets.token_hex(6)}-{n}", "occurred_at": when, "feature": "training"}
                       for n in range(count)]}  # $5.00 each  # fmt: skip


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- The run ----------------------------------------------------------------------------------------


@dataclass
class Results:
    vendor: str = ""
    redis: bool = False
    cached: Latency | None = None
    cached_cpu: str = ""  # where the CPU went in the cached phase (bench/cpu.py)
    cold: list[float] = field(default_factory=list)
    blocked_after: float | None = None
    unblocked_after: float | None = None
    alert_delays: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def summary(results: Results, args: argparse.Namespace) -> str:
    p = clients.percentile
    rows = [(f"allowance & alerts on {results.vendor}{' + Redis' if results.redis else ', no Redis'} ({cores()} cores)",
             "measured", "target", "")]  # fmt: skip
    if results.cached:
        cached = results.cached
        verdict = "ok" if cached.p99_ms <= ALLOWANCE_P99_TARGET_MS else "MISSED"
        rows.append((f"GET /allowance, {args.connections} connections ({cached.tool})", f"p99 {cached.p99_ms:.1f} ms",
                     f"<= {ALLOWANCE_P99_TARGET_MS:g} ms",
                     f"{verdict}  (p50 {cached.p50_ms:.1f} ms, {cached.per_second:,.0f} req/s, {cached.requests:,} calls)"))  # fmt: skip
    if results.cold:
        rows.append(("GET /allowance, counters rebuilt", f"p99 {ms(p(results.cold, 0.99))}", "",
                     f"(p50 {ms(p(results.cold, 0.5))}: a cache miss sums the month's rollups)"))  # fmt: skip
    if results.blocked_after is not None:
        rows.append(("blocked after the crossing event", ms(results.blocked_after), f"< {BLOCK_TARGET_S:g} s",
                     "ok (the first call after the POST)" if results.blocked_after < BLOCK_TARGET_S else "MISSED"))  # fmt: skip
    if results.unblocked_after is not None:
        rows.append(("unblocked after raising the budget", ms(results.unblocked_after), "at once", ""))
    if results.alert_delays:
        worst = max(results.alert_delays)
        rows.append(("event-to-alert delay (webhook, worker)", f"max {ms(worst)}", f"< {ALERT_TARGET_S:g} s",
                     ("ok" if worst < ALERT_TARGET_S else "MISSED")
                     + f"  (p50 {ms(p(results.alert_delays, 0.5))}, {len(results.alert_delays)} alerts)"))  # fmt: skip
    widths = (52, 18, 12)
    lines = [f"{a:<{widths[0]}}{b:<{widths[1]}}{c:<{widths[2]}}{d}".rstrip() for a, b, c, d in rows]
    rule = "-" * max(len(line) for line in lines)
    notes = [f"allowance: {results.cached_cpu}"] if results.cached_cpu else []
    if not results.redis:
        notes.append("NOTE: no Redis: the allowance reads the rollups and budgets from the database on every call.")
    return "\n".join([lines[0], rule, *lines[1:], rule, *notes])


def run(args: argparse.Namespace) -> Results:
    var_dir = BASE_DIR / "var" / "bench"
    var_dir.mkdir(parents=True, exist_ok=True)
    results = Results()
    server: Gunicorn | None = None
    worker: CeleryWorker | None = None
    receiver = Receiver()
    workspace_id = None
    django_ready = False

    def step(n: int, name: str, text: str) -> None:
        print(f"[{n}/{PHASES}] {name:<10} {text}", flush=True)

    try:
        target = database.choose(os.environ.get("DATABASE_URL"), var_dir)
        results.vendor = target.vendor
        redis = redis_url()
        results.redis = bool(redis)
        env = environment(target.url, redis, var_dir)
        if not (BASE_DIR / "staticfiles" / "staticfiles.json").exists():
            # Production settings serve hashed static files: the manifest must exist (as after a deploy).
            database.manage(BASE_DIR, env, "collectstatic", "--noinput")
        database.manage(BASE_DIR, env, "migrate", "--noinput")
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)
        database.django_setup()
        django_ready = True
        step(1, "database", f"{target.vendor} ({target.note}), {'Redis ' + redis if redis else 'no Redis: embedded broker'}")

        slug = f"bench-allowance-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        database.manage(BASE_DIR, env, "create_workspace", slug, "--owner", OWNER_EMAIL)
        secret = database.manage(BASE_DIR, env, "create_api_key", slug, "--name", "generator").split()[-1]
        alert_secret = database.manage(BASE_DIR, env, "create_api_key", slug, "--name", "alerts").split()[-1]
        workspace_id, _ = database.workspace_ids(slug)
        database.close_connections()

        server = Gunicorn(base_dir=BASE_DIR, env=env, workers=args.workers, log_path=var_dir / "gunicorn-allowance.log")
        server.start()
        worker = CeleryWorker(env, var_dir / "worker-allowance.log")
        worker_ready = worker.start()
        receiver_port = receiver.start()
        step(2, "servers", f"gunicorn ({args.workers} sync workers) on 127.0.0.1:{server.port}, Celery worker ready "
                           f"in {worker_ready:.1f} s, webhook receiver on 127.0.0.1:{receiver_port}")  # fmt: skip

        factory = EventFactory("u-", seed=7)
        sizes = [1000] * (args.usage_events // 1000) + ([args.usage_events % 1000] if args.usage_events % 1000 else [])
        loaded = clients.post_batches(port=server.port, secret=secret, bodies=[batch_body(factory.batch(n)) for n in sizes],
                                      expected=sizes, connections=2)  # fmt: skip
        if loaded.failures:
            raise ServerError("loading usage failed: " + loaded.failures[0])
        api = Api(server.port, secret)
        budget = api.ok("POST", "/api/v1/budgets", {"amount": "1000000", "hard_limit": True, "thresholds": [],
                                                    "forecast_alerts": False, "email": False}, status=201)  # fmt: skip
        spend = api.ok("GET", "/api/v1/allowance")["spend"]
        step(3, "workspace", f"{slug}: {loaded.accepted:,} events this month (${spend}), a hard-limit budget of $1,000,000")

        # 4. Allowance latency.
        time_allowance(server.port, secret, 200, args.connections)  # warm-up
        wrk = None if args.client == "python" else clients.wrk_path(install=False)
        if args.client == "wrk" and wrk is None:
            raise ServerError("--client wrk: wrk is not installed (Debian: apt-get install wrk)")
        pg_name = target.name if target.vendor == "postgresql" else None
        before, started = cpu.snapshot(server.pid, pg_name), time.monotonic()
        if wrk:
            results.cached = allowance_with_wrk(wrk, server.port, secret, connections=args.connections,
                                                seconds=args.seconds, out_dir=var_dir / "wrk")  # fmt: skip
        else:
            latencies, elapsed = time_allowance(server.port, secret, None, args.connections, until=time.monotonic() + args.seconds)
            results.cached = Latency("Python http.client", clients.percentile(latencies, 0.5) * 1000,
                                     clients.percentile(latencies, 0.99) * 1000, len(latencies), len(latencies) / elapsed)  # fmt: skip
        used = cpu.usage(before, cpu.snapshot(server.pid, pg_name), time.monotonic() - started)
        if used is not None:
            results.cached_cpu = used.describe(results.cached.requests, 1, "call", postgres=pg_name is not None)
        drop = None
        if redis and args.cold:
            from budgets import counters

            backend = counters._backend()
            pattern = f"{counters.key_prefix()}:{{w{workspace_id}}}:spend:*"

            def drop():
                for key in backend.client.scan_iter(match=pattern):
                    backend.client.delete(key)

        if args.cold:
            results.cold, _ = time_allowance(server.port, secret, args.cold, 1, before_each=drop)
        p = clients.percentile
        step(4, "allowance", f"{results.cached.requests:,} calls ({results.cached.tool}): p50 {results.cached.p50_ms:.1f} ms, "
                             f"p99 {results.cached.p99_ms:.1f} ms"
                             + (f"; {args.cold} rebuilt: p99 {ms(p(results.cold, 0.99))}" if results.cold else ""))  # fmt: skip

        # 5. Blocking and unblocking.
        spend = Decimal(api.ok("GET", "/api/v1/allowance")["spend"])
        api.ok("PATCH", f"/api/v1/budgets/{budget['id']}", {"amount": str(spend + Decimal("4.99"))})
        if api.ok("GET", "/api/v1/allowance")["allowed"] is not True:
            raise ServerError("allowance blocked before the crossing event")
        api.ok("POST", "/api/v1/events", training("cross", 1))  # $5.00: crosses it
        results.blocked_after = wait_allowed(api, False, 5)
        api.ok("PATCH", f"/api/v1/budgets/{budget['id']}", {"amount": "1000000"})
        results.unblocked_after = wait_allowed(api, True, 5)
        if results.blocked_after is None or results.unblocked_after is None:
            results.problems.append("blocking: the allowance did not change within 5 s")
        step(5, "blocking", f"blocked {ms(results.blocked_after or 0)} after the crossing event's 200, "
                            f"unblocked {ms(results.unblocked_after or 0)} after the raise")  # fmt: skip

        # 6. Event-to-alert delay through the worker.
        alerts_api = Api(server.port, alert_secret)
        key_prefix = "mbk_" + alert_secret.split("_")[1]
        api.ok("POST", "/api/v1/budgets", {"amount": "100", "api_key": key_prefix, "thresholds": list(range(10, 101, 10)),
                                           "forecast_alerts": False, "email": False,
                                           "webhooks": [{"url": f"http://127.0.0.1:{receiver_port}/hook"}]}, status=201)  # fmt: skip
        for round_ in range(1, args.rounds + 1):
            alerts_api.ok("POST", "/api/v1/events", training(f"alert{round_}", 2))  # $10: the next 10 %
            accepted = time.monotonic()
            arrived = receiver.wait_for_threshold(10 * round_, accepted + ALERT_TARGET_S * 2)
            if arrived is None:
                results.problems.append(f"alerts: the {10 * round_} % alert never arrived")
                break
            results.alert_delays.append(max(arrived - accepted, 0.0))
        if results.alert_delays:
            step(6, "alerts", f"{len(results.alert_delays)} alerts: p50 {ms(p(results.alert_delays, 0.5))}, "
                              f"max {ms(max(results.alert_delays))} from the crossing event's 200 to the webhook")  # fmt: skip
    except KeyboardInterrupt:
        results.problems.append("interrupted")
    except (database.DatabaseError, ServerError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        results.problems.append(str(exc).splitlines()[0])
    except Exception as exc:  # a bug: show it, still stop and clean up
        traceback.print_exc()
        results.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        receiver.stop()
        if server is not None:
            server.stop()
        if worker is not None:
            worker.stop()
        if workspace_id is not None and django_ready and not args.keep:
            try:
                database.cleanup(workspace_id)
                step(7, "cleanup", f"deleted workspace #{workspace_id} and its events, budgets and alerts")
            except Exception as exc:  # never hide the figures behind a cleanup failure
                step(7, "cleanup", f"FAILED ({type(exc).__name__}: {exc}); delete workspace #{workspace_id} by hand")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, print the summary table; 0 when every phase ran and no target was missed."""
    args = parse_args(argv)
    print(f"Meterboard allowance and alert benchmark (HTTP through gunicorn; loopback only); {cores()} cores", flush=True)
    results = run(args)
    if results.vendor:
        print()
        print(summary(results, args))
    for problem in results.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    missed = results.cached is not None and results.cached.p99_ms > ALLOWANCE_P99_TARGET_MS
    return 1 if results.problems or missed else 0


if __name__ == "__main__":
    sys.exit(main())
