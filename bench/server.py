"""The processes a benchmark runs: gunicorn serving config.wsgi on a free 127.0.0.1 port, a Celery
worker, and a local HTTP receiver for webhooks. Each is stopped by the bench that started it, also
on errors and Ctrl-C; gunicorn and the worker run in process groups of their own, ended by id."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .environment import BASE_DIR


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    pass


class Gunicorn:
    """gunicorn with `workers` sync workers, in a process group of its own (so that a Ctrl-C in
    the terminal reaches the bench, which then stops it), logging to `log_path`."""

    def __init__(
        self, *, env: dict[str, str], workers: int, log_path: Path, base_dir: Path = BASE_DIR,
        app: str = "config.wsgi:application", ready_path: str = "/api/v1/events",
    ):  # fmt: skip
        self.base_dir = base_dir
        self.app, self.ready_path = app, ready_path
        self.env = env
        self.workers = workers
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [
            str(self.base_dir / ".venv" / "bin" / "gunicorn"),
            self.app,
            "--workers", str(self.workers),
            "--worker-class", "sync",
            "--bind", f"127.0.0.1:{self.port}",
            "--timeout", "120",
            "--graceful-timeout", "10",
            "--log-level", "warning",
        ]  # fmt: skip

    def start(self, *, ready_within: float = 60.0) -> float:
        """Start and wait until it answers HTTP; returns the seconds that took."""
        gunicorn = Path(self.command[0])
        if not os.access(gunicorn, os.X_OK):
            raise ServerError(f"{gunicorn} is missing: run `make venv` (gunicorn is in requirements.txt).")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.base_dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while time.monotonic() - started < ready_within:
            if self.process.poll() is not None:
                raise ServerError(f"gunicorn exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return time.monotonic() - started
            time.sleep(0.2)
        raise ServerError(f"gunicorn did not answer within {ready_within:.0f} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", self.ready_path)
            connection.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            connection.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (graceful: workers finish their request), then SIGKILL to the group if needed."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the group this bench started, by its id
            except ProcessLookupError:
                pass
            process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no gunicorn log)"
        return "\n".join(text.splitlines()[-lines:]) or "(gunicorn log is empty)"


class CeleryWorker:
    """`celery -A config worker` on both queues (celery, webhooks), 2 processes, logging to
    `log_path`; ready when its log says so."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.process: subprocess.Popen | None = None

    def start(self, ready_within: float = 60) -> float:
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BASE_DIR / ".venv" / "bin" / "celery"), "-A", "config", "worker", "--loglevel=INFO",
                 "-Q", "celery,webhooks", "--concurrency=2", "-n", f"bench-allowance-{os.getpid()}@localhost",
                 "--without-gossip", "--without-mingle"],
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


@dataclass
class WebhookReceiver:
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
