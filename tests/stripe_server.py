"""A real localstripe server (a Stripe-compatible API) for the payment tests.

localstripe keeps its data in one fixed file, /tmp/localstripe.pickle, which would make every
instance on the machine share (and overwrite) one store. Each instance here is started through
scripts/localstripe_server.py, which points its store at a file of its own (beside its log), so
test runs in parallel never see each other's data, and `restart()` brings back exactly what this
instance held.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

SECRET_KEY = "sk_test_123"
# `localstripe --port N [--from-scratch]`, its store in the file MB_LOCALSTRIPE_STORE names (the
# same launcher `make run` uses).
RUN_LOCALSTRIPE = Path(__file__).resolve().parent.parent / "scripts" / "localstripe_server.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalStripe:
    """`localstripe --port <free port>` as a subprocess, with its test-only `/_config` endpoints."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.port = 0
        self.store_path = log_path.with_suffix(".store")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> LocalStripe:
        self.port = free_port()
        self._spawn(from_scratch=True)
        return self._wait_ready(timeout)

    def _spawn(self, *, from_scratch: bool) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RUN_LOCALSTRIPE), "--port", str(self.port), *(["--from-scratch"] if from_scratch else [])],
            stdout=self.log_path.open("a"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "MB_LOCALSTRIPE_STORE": str(self.store_path)},
            start_new_session=True,
        )

    def kill(self) -> None:
        """A Stripe outage: the server process dies (SIGKILL); the port refuses connections. What
        it held stays in its store file, for `restart()`."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def restart(self, timeout: float = 30) -> LocalStripe:
        """Start again on the same port with the data it held when it died."""
        self._spawn(from_scratch=False)
        return self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> LocalStripe:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"localstripe exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if self.get("/v1/customers").status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"localstripe did not answer in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    # --- plain HTTP, for the tests to read what Stripe holds --------------------------------

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, auth=(SECRET_KEY, ""), timeout=10)

    def reset(self) -> None:
        """Forget every object (webhook registrations stay: see webhook_register)."""
        requests.delete(self.url + "/_config/data", timeout=10).raise_for_status()

    def webhook_register(self, name: str, url: str, secret: str) -> None:
        """Make localstripe POST every event, signed with `secret`, to `url` (about 1 s later)."""
        response = requests.post(
            f"{self.url}/_config/webhooks/{name}", data={"url": url, "secret": secret}, timeout=10
        )
        response.raise_for_status()

    def payment_intents(self, customer: str | None = None) -> list[dict]:
        """Every PaymentIntent localstripe holds (of `customer`, when given). localstripe has no
        customer filter on this list, so it is filtered here."""
        found, after = [], None
        while True:
            params = {"limit": 100, **({"starting_after": after} if after else {})}
            page = self.get("/v1/payment_intents", **params).json()
            found += page["data"]
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        return [intent for intent in found if customer is None or intent["customer"] == customer]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, made as Stripe makes it."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def event_body(event_type: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_test_{os.urandom(6).hex()}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()
