"""Meterboard behind PgBouncer in transaction pooling mode (issue 13): the test starts Debian's
pgbouncer on a free port in front of the test database, and a process of its own whose
DATABASE_URL points at it (DATABASE_TRANSACTION_POOLING=1) ingests single events from four threads
through a pool of two server connections, a batch and its repeat, and reads the allowance, the
usage API, /readyz and an iterator over the events: everything answers, every event is stored
once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

PGBOUNCER = "/usr/sbin/pgbouncer"
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
    port = free_port()
    # Not under pytest's tmp_path: pgbouncer drops root for postgres, who cannot enter that.
    folder = Path(tempfile.mkdtemp(prefix="mb-pgbouncer-"))
    folder.chmod(0o755)
    (folder / "users.txt").write_text(f'"{params.get("user", "postgres")}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={params.get('host', '127.0.0.1')} port={params.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 50\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    command = [PGBOUNCER, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]  # it refuses to run as root
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    else:
        process.kill()
    if process.poll() is not None:
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
        pytest.fail(f"pgbouncer did not start:\n{output}\n{log}")
    yield f"postgres://{params.get('user', 'postgres')}@127.0.0.1:{port}/{settings.DATABASES['default']['NAME']}"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(folder, ignore_errors=True)


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
