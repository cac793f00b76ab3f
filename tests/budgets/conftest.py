"""Budgets fixtures: clean counters, a local webhook receiver, spend helpers, a real Celery worker
(module-wide), and a fleet of workers and a beat a test starts, and may kill, itself."""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from budgets import counters
from budgets.webhooks import signature_verify

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
_ids = itertools.count(1)

# Flat add-on prices (USD): any amount is a sum of these.
TRAINING, BACKGROUND_REMOVAL, CAPTIONING = "5.00", "0.10", "0.015"


def spend_events(dollars: int, *, cents: int = 0, prefix: str = "spend", occurred_at: str | None = None) -> list[dict]:
    """Events worth exactly `dollars` + `cents`/100 USD: trainings (5.00) and background removals
    (0.10), occurring now (this UTC month) unless told otherwise."""
    assert dollars % 5 == 0 and cents % 10 == 0, "use multiples of $5 and of 10 cents"
    when = occurred_at or timezone.now().isoformat()
    events = [
        {"event_id": f"{prefix}-{next(_ids)}", "occurred_at": when, "feature": "training"} for _ in range(dollars // 5)
    ]
    if cents:
        events.append(
            {"event_id": f"{prefix}-{next(_ids)}", "occurred_at": when, "feature": "background_removal", "quantity": cents // 10}
        )
    return events


@pytest.fixture(autouse=True)
def _fresh_counters(django_db_setup):
    """Counters and pending marks of an earlier test (or run: ids restart with a new test
    database) must not leak into this one."""
    if not settings.REDIS_URL:
        cache.clear()  # local memory (with Redis, the cache shares the broker's database: keep it)
    backend = counters._backend()
    if backend is not None:
        keys = list(backend.client.scan_iter(match=f"{counters.key_prefix()}:*", count=1000))
        if keys:
            backend.client.delete(*keys)
    yield


@pytest.fixture
def allow_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True


# --- A webhook receiver ----------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time()

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """http.server in a thread: records every POST; paths under /slow sleep `slow_seconds` before
    answering, /fail answers 500, anything else 204. Paths under /fail-once answer the first POST
    500; paths under /flaky answer 500 while `flaky_failures` (counted down by each) is above 0; paths under /hold-once hold the first POST unanswered until `release()` (a request in
    flight when a worker dies), then answer the same, 204, like the later ones."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    slow_seconds: float = 4.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)
    flaky_failures: int = 0

    def release(self) -> None:
        self.released.set()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, seconds: float = 30) -> list[Received]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.on(path)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.on(path))} of {count} webhook(s) in {seconds} s")

    def verified(self, path: str, secret: str) -> list[dict]:
        """The bodies received on `path`, each checked against its signature."""
        bodies = []
        for item in self.on(path):
            header = item.headers["Meterboard-Signature"]
            assert signature_verify(secret, header, item.body, now=item.at), header
            bodies.append(item.json)
        return bodies


@pytest.fixture
def receiver():
    state = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.received.append(Received(self.path, dict(self.headers), body, time.time()))
                first = sum(r.path == self.path for r in state.received) == 1
            if self.path.startswith("/slow"):
                time.sleep(state.slow_seconds)
            if self.path.startswith("/hold-once") and first:
                state.released.wait(120)
            if self.path.startswith("/fail-once"):
                status = 500 if first else 204
            elif self.path.startswith("/flaky"):
                with state.lock:
                    status = 500 if state.flaky_failures > 0 else 204
                    state.flaky_failures -= 1
            else:
                status = 500 if self.path.startswith("/fail") else 204
            try:
                self.send_response(status)
                self.end_headers()
            except OSError:  # the client is gone (a worker killed mid-request)
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- A real Celery worker ---------------------------------------------------------------------------


def database_url_for_tests() -> str:
    """The test database (pytest-django renamed it) as a URL for another process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def mails_in(folder: Path) -> list[str]:
    """Every message Django's file e-mail backend wrote in `folder` (it may append several to one
    file): what a worker with MB_TEST_EMAIL_DIR sent."""
    messages = []
    for path in sorted(folder.glob("*.log")):
        messages += [m for m in path.read_text().split("-" * 79 + "\n") if m.strip()]
    return messages


def subjects_in(folder: Path) -> list[str]:
    return sorted(line.removeprefix("Subject: ") for m in mails_in(folder) for line in m.splitlines() if line.startswith("Subject: "))


WORKER_WEBHOOK_TIMEOUT = 1.5  # seconds: the worker's WEBHOOK_TIMEOUT_SECONDS


@dataclass
class Worker:
    """The two workers of the Procfile: the default queue's and the webhooks queue's."""

    process: subprocess.Popen
    log: Path
    mail_dir: Path
    webhooks_process: subprocess.Popen
    webhooks_log: Path

    def mails(self) -> list[str]:
        return mails_in(self.mail_dir)

    def subjects(self) -> list[str]:
        return subjects_in(self.mail_dir)

    def forget_mails(self) -> None:
        for path in self.mail_dir.glob("*.log"):
            path.unlink()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") + self.webhooks_log.read_text(errors="replace")


WEBHOOK_WORKER_CONCURRENCY = 4  # above the per-workspace cap of webhook attempts (2)


def _celery_worker(queue: str, concurrency: int, env: dict, log: Path) -> subprocess.Popen:
    hostname = f"budgets-test-{queue}-{os.getpid()}@localhost"
    return subprocess.Popen(
        [CELERY, "-A", "config", "worker", "-Q", queue, "--loglevel=INFO", "--pool=prefork",
         f"--concurrency={concurrency}", "-n", hostname, "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def worker(tmp_path_factory, django_db_setup, django_db_blocker):
    """The Procfile's two workers: `celery -A config worker -Q celery` (prefork, 2 processes) and
    `-Q webhooks` (prefork, WEBHOOK_WORKER_CONCURRENCY), on the suite's broker, connected to the
    test database, with webhooks to 127.0.0.1 allowed and e-mails written to files."""
    from config.celery import app

    folder = tmp_path_factory.mktemp("worker")
    mail_dir = folder / "mail"
    mail_dir.mkdir()
    log, webhooks_log = folder / "worker.log", folder / "webhooks-worker.log"
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "WEBHOOK_TIMEOUT_SECONDS": str(WORKER_WEBHOOK_TIMEOUT),
        "MB_TEST_EMAIL_DIR": str(mail_dir),
    }
    app.control.purge()  # tasks other tests enqueued with no worker to run them
    process = _celery_worker("celery", 2, env, log)
    webhooks_process = _celery_worker("webhooks", WEBHOOK_WORKER_CONCURRENCY, env, webhooks_log)
    try:
        deadline = time.monotonic() + 60
        for started, path in ((process, log), (webhooks_process, webhooks_log)):
            while "ready." not in path.read_text(errors="replace"):
                if started.poll() is not None:
                    pytest.fail(f"the worker exited with {started.returncode}:\n{path.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the worker was not ready in 60 s:\n{path.read_text()}")
                time.sleep(0.1)
        yield Worker(process, log, mail_dir, webhooks_process, webhooks_log)
    finally:
        _stop(process)
        _stop(webhooks_process)


def wait_until(predicate, seconds: float = 30, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds} s")


# --- A receiver that drips its answer ----------------------------------------------------------------


@dataclass
class DripConnection:
    delivery: str  # the Meterboard-Delivery header
    workspace: str  # the body's "workspace"
    opened: float  # time.monotonic()
    closed: float | None = None  # when the client went away


@dataclass
class DripReceiver:
    """A raw TCP server: reads each request, then answers "HTTP/1.1 200 OK" and one header line
    every `interval` seconds for `seconds` (minutes by default), never finishing in time. Records
    when each connection opened and when the client closed it."""

    interval: float = 0.5
    seconds: float = 300.0
    port: int = 0
    connections: list[DripConnection] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/drip") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def snapshot(self) -> list[DripConnection]:
        with self.lock:
            return list(self.connections)

    def open_at(self, moment: float, workspace: str | None = None) -> int:
        return sum(
            1 for c in self.snapshot()
            if c.opened <= moment and (c.closed is None or c.closed > moment) and workspace in (None, c.workspace)
        )  # fmt: skip

    def serve(self, client) -> None:
        client.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            headers = dict(
                line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line
            )
            length = int(headers.get("Content-Length", 0))
            while len(body) < length:
                body += client.recv(65536)
            try:
                workspace = json.loads(body).get("workspace", "")
            except ValueError:
                workspace = ""
            record = DripConnection(headers.get("Meterboard-Delivery", ""), workspace, time.monotonic())
            with self.lock:
                self.connections.append(record)
            client.sendall(b"HTTP/1.1 200 OK\r\n")
            ends = time.monotonic() + self.seconds
            n = 0
            while time.monotonic() < ends:
                readable, _, _ = select.select([client], [], [], self.interval)
                if readable and not client.recv(1):  # the client hung up
                    break
                client.sendall(f"X-Drip-{n}: still here\r\n".encode())
                n += 1
            record.closed = time.monotonic()
        except OSError:
            if "record" in locals() and record.closed is None:
                record.closed = time.monotonic()
        finally:
            client.close()


@pytest.fixture
def drip_receiver():
    state = DripReceiver()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)  # so that the accepting thread sees `stopping` (closing does not wake it)
    state.port = server.getsockname()[1]
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setblocking(True)
            threading.Thread(target=state.serve, args=(client,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield state
    stopping.set()
    acceptor.join()
    server.close()


# --- Processes a test may kill: workers and a beat of its own ----------------------------------------


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc): a worker's pool processes."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class Process:
    """A `celery` process this test started, in a session of its own (so a kill reaches the pool
    processes it forked, and nothing else)."""

    name: str
    process: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, *, count: int = 1, seconds: float = 60) -> None:
        """Until `pattern` (a regular expression) is in the log `count` times."""
        deadline = time.monotonic() + seconds
        while len(re.findall(pattern, self.text())) < count:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: {pattern!r} not {count} time(s) in {seconds} s:\n{self.text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the process and its pool processes at once, as a lost machine or an OOM kill of
        the container would: nothing is acknowledged, nothing is handed back to the broker."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def freeze_pool(self) -> None:
        """SIGSTOP the pool processes (not the main one, which keeps taking tasks from the broker):
        a task it takes now is held, not started, until the process is killed."""
        children = _children(self.process.pid)
        assert children, f"{self.name} has no pool processes"
        for pid in children:
            os.kill(pid, signal.SIGSTOP)


@dataclass
class Fleet:
    """Workers and a beat started by the test on the suite's broker and test database, with the
    production timings (WEBHOOK_TIMEOUT_SECONDS and EMAIL_TIMEOUT at their defaults)."""

    folder: Path
    env: dict
    processes: list[Process] = field(default_factory=list)

    def _start(self, name: str, args: list[str]) -> Process:
        log = self.folder / f"{name}-{len(self.processes)}.log"
        process = subprocess.Popen(
            [CELERY, "-A", "config", *args], cwd=ROOT, env=self.env, stdout=log.open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started = Process(name, process, log)
        self.processes.append(started)
        return started

    def worker(self, queue: str, concurrency: int = 2, *, ready: bool = True) -> Process:
        """`celery -A config worker -Q <queue>` (prefork, as in the Procfile), ready to take tasks
        unless `ready=False` (then it is starting)."""
        hostname = f"faults-{queue}-{len(self.processes)}-{os.getpid()}@localhost"
        started = self._start(f"worker-{queue}", [
            "worker", "-Q", queue, "--loglevel=INFO", "--pool=prefork", f"--concurrency={concurrency}",
            "-n", hostname, "--without-gossip", "--without-mingle",
        ])  # fmt: skip
        if ready:
            started.wait_for(r"ready\.")
        return started

    def beat(self) -> Process:
        """`celery -A config beat` with the project's schedule (config/schedule.py), its state in tmp."""
        started = self._start("beat", ["beat", "--loglevel=INFO", "-s", str(self.folder / "beat-schedule")])
        started.wait_for(r"beat: Starting")
        return started

    def stop(self) -> None:
        running = [started.process for started in self.processes if started.process.poll() is None]
        for process in running:
            process.terminate()  # all at once: each takes a few seconds to shut down
        for process in running:
            _stop(process)


def purge_queues() -> None:
    """Drop tasks other tests left in the broker's queues (ids of their rows, long gone)."""
    from config.celery import DEFAULT_QUEUE, WEBHOOK_QUEUE, app

    with app.connection_for_write() as connection_:
        for queue in (DEFAULT_QUEUE, WEBHOOK_QUEUE):
            connection_.default_channel.queue_purge(queue)


@pytest.fixture
def fleet(tmp_path, transactional_db):
    """Start workers and a beat with `fleet.worker(queue)` and `fleet.beat()`; all of them are
    stopped at the end of the test (the ones it killed are gone already)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": settings.REDIS_URL,
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "MB_TEST_EMAIL_DIR": str(tmp_path / "mail"),
        # Its beat's lock and schedule state in Redis (celery-redbeat) are its own: a beat another
        # test killed cannot hold this one back.
        "MB_REDBEAT_PREFIX": f"mb:redbeat:test:{os.getpid()}:{tmp_path.name}",
    }
    (tmp_path / "mail").mkdir()
    for name in ("WEBHOOK_TIMEOUT_SECONDS", "EMAIL_TIMEOUT", "WEBHOOK_CONCURRENCY_PER_WORKSPACE"):
        env.pop(name, None)  # the production defaults
    purge_queues()
    started = Fleet(tmp_path, env)
    try:
        yield started
    finally:
        started.stop()
