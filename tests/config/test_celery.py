"""`celery -A config worker` and `celery -A config beat` start on the configured broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


def start(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    return subprocess.Popen(
        [CELERY, "-A", "config", *args], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(log: Path, text: str, process: subprocess.Popen, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        output = log.read_text()
        if text in output:
            return output
        if process.poll() is not None:
            pytest.fail(f"celery exited with {process.returncode}:\n{output}")
        time.sleep(0.2)
    pytest.fail(f"{text!r} not seen in {seconds}s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_a_real_worker_starts_and_answers_on_the_broker(tmp_path):
    from config.celery import app

    # Tasks that earlier tests enqueued (budget evaluations after ingestion) name ids in the test
    # database; this worker is connected to DATABASE_URL's database instead: drop them first.
    app.control.purge()
    log = tmp_path / "worker.log"
    hostname = f"mb-test-{os.getpid()}@localhost"
    worker = start("worker", "--loglevel=INFO", "--concurrency=1", "--pool=solo", "-n", hostname, log=log)
    try:
        output = wait_for(log, "ready.", worker)
        expected = "redis://" if settings.REDIS_URL else "filesystem://"
        assert expected in output
        if settings.REDIS_URL:
            replies = app.control.ping(destination=[hostname], timeout=5)
            assert replies and hostname in replies[0]
    finally:
        stop(worker)


@pytest.mark.slow
def test_beat_starts_with_the_project_schedule(tmp_path):
    log = tmp_path / "beat.log"
    beat = start("beat", "--loglevel=INFO", "-s", str(tmp_path / "schedule"), log=log)
    try:
        wait_for(log, "beat: Starting", beat)
    finally:
        stop(beat)
