"""The Python client's tests run it against a live server: gunicorn (bench.server.Gunicorn) serving
the app on the test database and Redis, behind `FaultyFront`, an HTTP proxy the test runs in a
thread, which can answer 429 or 503 with Retry-After, 413 above a body size (as a proxy's body
limit would), or forward a request and then drop the connection instead of relaying the answer
(the server stored the events; the client never learns it). The server can be killed (SIGKILL to
its process group) and started again on the same port."""

from __future__ import annotations

import http.client
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings

from bench.server import Gunicorn
from pricing.selectors import FRESHNESS_SECONDS
from tests.budgets.conftest import _fresh_counters, database_url_for_tests  # noqa: F401  (autouse: clean counters)
from workspaces.services import api_key_create, workspace_create

FORWARD, THROTTLE, UNAVAILABLE, LOSE, TOO_LARGE, UPSTREAM_DOWN = (
    "forward", "429", "503", "lose", "413", "upstream-down")  # fmt: skip
RELAYED_HEADERS = ("Content-Type", "Retry-After", "X-Request-ID")


@dataclass
class Seen:
    at: float  # time.monotonic()
    method: str
    path: str
    what: str  # FORWARD (with the server's status), or the fault answered instead
    status: int | None = None
    size: int = 0  # bytes of the request's body


@dataclass
class FaultyFront:
    """An HTTP/1.1 proxy on a free 127.0.0.1 port in front of `upstream_port`. `mix` maps faults
    to their probability per request (the rest are forwarded), after the faults in `script`, one per
request in order; `retry_after` is the header the
    429s and 503s carry; `max_body` answers 413 to larger bodies. `seen` records every request."""

    upstream_port: int
    mix: dict[str, float] = field(default_factory=dict)
    script: list[str] = field(default_factory=list)
    retry_after: str = "1"
    max_body: int | None = None
    seen: list[Seen] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(14))
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, what: str, path: str = "/api/v1/events") -> int:
        return sum(1 for s in list(self.seen) if s.what == what and s.path == path)

    def requests(self, path: str = "/api/v1/events") -> list[Seen]:
        return [s for s in list(self.seen) if s.path == path]

    def start(self) -> FaultyFront:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real load balancer offers

            def do_GET(self):
                front._handle(self)

            def do_POST(self):
                front._handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _fault(self) -> str:
        if self.script:
            return self.script.pop(0)
        roll = self.rng.random()
        for fault, share in self.mix.items():
            if roll < share:
                return fault
            roll -= share
        return FORWARD

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        seen = Seen(time.monotonic(), handler.command, handler.path.split("?")[0], FORWARD, size=len(body))
        self.seen.append(seen)
        fault = self._fault()
        if self.max_body is not None and len(body) > self.max_body:
            fault = TOO_LARGE
        if fault in (THROTTLE, UNAVAILABLE, TOO_LARGE):
            seen.what = fault
            self._answer(handler, int(fault), b'{"detail": "injected by the test\'s front"}',
                         {"Content-Type": "application/json", "Retry-After": self.retry_after})  # fmt: skip
            return
        headers = {name: value for name, value in handler.headers.items() if name.lower() not in ("host", "connection")}
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            upstream.request(handler.command, handler.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            content = response.read()
        except OSError:
            seen.what = UPSTREAM_DOWN  # refused, or killed mid-request: the client's connection is cut
            handler.close_connection = True
            return
        finally:
            upstream.close()
        seen.status = response.status
        if fault == LOSE:
            seen.what = LOSE  # the server acted on it; the answer never reaches the client
            handler.close_connection = True
            return
        self._answer(handler, response.status, content,
                     {name: response.getheader(name) for name in RELAYED_HEADERS if response.getheader(name)})  # fmt: skip

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, content: bytes, headers: dict[str, str]) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)


class LiveServer:
    """gunicorn on the test database and Redis, restartable on the same port."""

    def __init__(self, log_dir, workers: int = 2):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test", "DATABASE_URL": database_url_for_tests(),
               "REDIS_URL": settings.REDIS_URL or "", "ALLOWED_HOSTS": "127.0.0.1,localhost"}  # fmt: skip
        self.gunicorn = Gunicorn(env=env, workers=workers, log_path=log_dir / "gunicorn.log", ready_path="/healthz")

    @property
    def port(self) -> int:
        return self.gunicorn.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        return self.gunicorn.start()

    def kill(self) -> None:
        """SIGKILL to gunicorn's process group (its arbiter and workers, started by this test)."""
        process = self.gunicorn.process
        self.gunicorn.process = None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        self.gunicorn.stop()


@pytest.fixture(scope="session")
def _gunicorn(tmp_path_factory, django_db_setup):
    """One gunicorn for the client's tests (starting one costs seconds on 2 busy cores), stopped
    before the test database is dropped."""
    server = LiveServer(tmp_path_factory.mktemp("client-server"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def gunicorn_server(_gunicorn, transactional_db):
    """The live server, for a test with a database of its own. Each such test's database is
    emptied and the price book loaded again (new ids): a process trusts its cached price books for
    FRESHNESS_SECONDS, so the test waits that long before its first request."""
    if not _gunicorn.gunicorn.alive():  # a test that killed it failed before starting it again
        _gunicorn.start()
    time.sleep(FRESHNESS_SECONDS + 0.1)
    return _gunicorn


@pytest.fixture
def front(gunicorn_server):
    front = FaultyFront(gunicorn_server.port).start()
    yield front
    front.stop()


@pytest.fixture
def key(transactional_db):
    """A workspace's all-scopes key: (workspace, issued key)."""
    workspace = workspace_create(slug="client", owner_email="client@test.example", name="Client Co")
    return workspace, api_key_create(workspace=workspace, name="python client")
