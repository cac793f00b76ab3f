"""A Redis restarted from an old snapshot brings back old month-to-date counters and cached hard
limits: the allowance must not trust them (issue 10, finding 1). The test runs its own
redis-server, with a snapshot file, on a free port, and restarts it for real."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from django.utils import timezone

from budgets import counters
from core.periods import current_period
from tests.budgets.conftest import spend_events
from tests.budgets.test_allowance import allowance, hard_budget
from tests.conftest import client_with, post_events
from workspaces.services import api_key_create, workspace_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
M = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of this test's own, whose snapshot (dump.rdb in `directory`) is written only
    by an explicit SAVE."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop_without_saving(self) -> None:
        try:
            self.client().shutdown(nosave=True)
        except redis.RedisError:
            pass  # the connection closes as the server exits
        if self.process is not None:
            self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path, settings, monkeypatch):
    server = RedisServer(tmp_path)
    server.start()
    settings.REDIS_URL = server.url
    monkeypatch.setattr(counters, "_redis", None)  # the counters' client now connects to this server
    yield server
    server.kill()


@pytest.fixture
def acme(transactional_db):
    workspace = workspace_create(slug="acme", owner_email="owner@acme.test")
    return workspace, api_key_create(workspace=workspace, name="generator")


def _reconnected() -> None:
    """The app's pooled connections died with the server: make sure the next call reaches the new
    one (a Redis error would be answered from the database and prove nothing)."""
    client = counters._backend().client
    deadline = time.monotonic() + 5
    while True:
        try:
            client.ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_redis_restarted_from_an_old_snapshot_does_not_fool_the_hard_limit(own_redis, acme):
    workspace, key = acme
    api = client_with(key.secret)
    period = current_period(timezone.now())
    hard_budget(api, "50")
    post_events(api, spend_events(20))
    assert allowance(api)["spend"] == "20.000000"  # builds the counters in our Redis
    counter_keys = counters._counter_keys(workspace.pk, key.api_key.pk, period)
    assert own_redis.client().mget(counter_keys) == [b"20000000", b"20000000"]
    assert own_redis.client().save()  # the snapshot: counters at 20.00

    post_events(api, spend_events(35))  # the database and Redis move on: 55.00, past the limit
    assert allowance(api)["allowed"] is False

    own_redis.stop_without_saving()
    own_redis.start()  # back from the snapshot
    assert own_redis.client().mget(counter_keys) == [b"20000000", b"20000000"]  # the stale counters are there
    _reconnected()

    for _ in range(3):  # not once by luck: every call, and the rebuilt counter after it
        answer = allowance(api)
        assert (answer["allowed"], answer["spend"]) == (False, "55.000000"), answer
    assert own_redis.client().mget(counter_keys) == [b"55000000", b"55000000"]  # rebuilt from the database
    post_events(api, spend_events(5))  # (refused by nobody: the API does not enforce; it counts)
    assert allowance(api)["spend"] == "60.000000"


def test_hard_limits_cached_before_a_snapshot_are_not_trusted_after_a_restart(own_redis, acme):
    """A budget lowered after the snapshot: the restored cache (and its generation) predate it."""
    _, key = acme
    api = client_with(key.secret)
    budget = hard_budget(api, "100")
    post_events(api, spend_events(30))
    assert allowance(api)["allowed"] is True  # caches the limits (100.00) and the counters
    assert own_redis.client().save()
    assert api.patch(f"/api/v1/budgets/{budget['id']}", {"amount": "25"}, format="json").status_code == 200
    assert allowance(api)["allowed"] is False

    own_redis.stop_without_saving()
    own_redis.start()
    _reconnected()
    answer = allowance(api)
    assert (answer["allowed"], answer["budget"]) == (False, "25.000000"), answer
