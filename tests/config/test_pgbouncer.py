"""Meterboard behind PgBouncer in transaction pooling mode (issue 13): the test starts Debian's
pgbouncer on a free port in front of the test database, and a process of its own whose
DATABASE_URL points at it (DATABASE_TRANSACTION_POOLING=1) ingests single events from four threads
through a pool of two server connections, a batch and its repeat, and reads the allowance, the
usage API, /readyz and an iterator over the events: everything answers, every event is stored
once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.cluster import PGBOUNCER, PgBouncer

BASE_DIR = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def pgbouncer():
    if connection.vendor != "postgresql":
        pytest.skip("PgBouncer pools PostgreSQL connections")
    if not os.access(PGBOUNCER, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is missing: .ci/run installs Debian's pgbouncer")
        pytest.skip("pgbouncer is missing: apt-get install pgbouncer (.ci/run does)")
    params = connection.get_connection_params()
    bouncer = PgBouncer(target_port=int(params.get("port", 5432)), pool_size=2).start()
    try:
        yield bouncer.url(settings.DATABASES["default"]["NAME"])
    finally:
        bouncer.stop()


def test_ingestion_and_reads_work_through_transaction_pooling(pgbouncer):
    env = {**os.environ, "DATABASE_URL": pgbouncer, "DATABASE_TRANSACTION_POOLING": "1",
           "DJANGO_SETTINGS_MODULE": "config.settings_test"}  # fmt: skip
    env.pop("DATABASE_PREPARED_STATEMENTS", None)
    run = subprocess.run([sys.executable, str(BASE_DIR / "tests" / "config" / "pooled_client.py")], cwd=BASE_DIR,
                         env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, run.stdout[-2000:] + run.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["prepared"] is False and result["server_side_cursors_off"] is True
    assert result["errors"] == [] and result["singles"] == 100
    assert (result["batch_accepted"], result["batch_repeated"]) == (200, 200)
    assert (result["readyz"], result["allowance"], result["usage_api"]) == (200, 200, 200)
    assert result["stored"] == result["iterated"] == 300
