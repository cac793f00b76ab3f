"""/healthz and /readyz for load balancers (issue 13): liveness without dependencies, readiness
that names what is missing: the database, a migration, Redis, the broker."""

from __future__ import annotations

import json
import socket

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from config import health
from config.wsgi import application, is_machine_call
from tests.conftest import wsgi_call

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_migrations_check():
    health.migrations_check_forget()
    yield
    health.migrations_check_forget()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed once the socket is: connections are refused


def test_healthz_answers_without_the_database():
    with CaptureQueriesContext(connection) as queries:
        response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert queries.captured_queries == []


def test_readyz_is_ready_with_every_check_named():
    response = Client().get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "redis", "broker"}
    assert body["checks"]["database"] == body["checks"]["migrations"] == body["checks"]["broker"] == "ok"
    assert response["Cache-Control"] == "no-store"


def test_readyz_is_not_ready_while_a_migration_is_pending():
    """A deploy whose code is ahead of the database: the node takes no traffic until migrate."""
    from django.db.migrations.loader import MigrationLoader

    # The newest migration of an app, as a deploy's new code brings it.
    [(_, latest)] = [node for node in MigrationLoader(None).graph.leaf_nodes() if node[0] == "usage"]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE app = 'usage' AND name = %s", [latest])
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert f"usage.{latest}" in body["checks"]["migrations"]
    assert "manage.py migrate" in body["checks"]["migrations"]


@pytest.mark.parametrize("password", ["", "s3cret-pass"])
def test_readyz_is_not_ready_when_redis_does_not_answer_and_names_no_secret(settings, password):
    """A failure says what failed, never the URL with its password."""
    if not settings.REDIS_URL:
        pytest.skip("the embedded default has no Redis to lose")
    settings.REDIS_URL = f"redis://:{password}@127.0.0.1:{closed_port()}/0" if password else (
        f"redis://127.0.0.1:{closed_port()}/0"
    )
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("failed: ConnectionError")
    assert not password or password not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_health_endpoints_take_the_short_chain_and_answer_alike():
    assert is_machine_call({"PATH_INFO": "/healthz"}) and is_machine_call({"PATH_INFO": "/readyz"})
    status, body, headers = wsgi_call(application, "GET", "/healthz", secret=None)
    assert (status, body) == (200, {"status": "ok"})
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, body, _ = wsgi_call(application, "GET", "/readyz", secret=None)
    assert status == 200 and body["status"] == "ready", body


def test_readyz_is_not_ready_without_the_database(tmp_path):
    """A node whose database refuses connections answers 503 naming the database (and does not
    try the migrations), and /healthz still answers: it is alive, only not ready. Run in a
    process of its own, pointed at a port where nothing listens."""
    import os
    import subprocess
    import sys

    script = (
        "import django, json; django.setup()\n"
        "from config.wsgi import application\n"
        "from tests.conftest import wsgi_call\n"
        "print('RESULT ' + json.dumps([wsgi_call(application, 'GET', path, secret=None)[:2] for path in "
        "('/healthz', '/readyz')]))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test",
           "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed_port()}/nowhere"}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", script], cwd=health.__file__.rsplit("/config/", 1)[0], env=env,
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, run.stdout[-1500:] + run.stderr[-2500:]
    (live_status, live), (ready_status, ready) = json.loads(lines[-1][len("RESULT "):])
    assert (live_status, live) == (200, {"status": "ok"})
    assert ready_status == 503
    assert ready["checks"]["database"].startswith("failed: OperationalError")
    assert ready["checks"]["migrations"] == "not checked (no database)"
    assert "nowhere" not in json.dumps(ready)  # the database's name is not told
