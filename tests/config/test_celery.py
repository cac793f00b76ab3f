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


def start(*args: str, log: Path, **extra_env: str) -> subprocess.Popen:
    # Its own beat lock and schedule state in Redis (celery-redbeat), whatever other tests left.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test",
           "MB_REDBEAT_PREFIX": f"mb:redbeat:test:{os.getpid()}:{log.parent.name}", **extra_env}  # fmt: skip
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


def probes(client, queue: str = "mb-beat-probe") -> int:
    """Messages beat has sent to the probe queue (no worker reads it)."""
    return sum(client.llen(key) for key in client.scan_iter(match=f"{queue}*") if client.type(key) == b"list")


@pytest.mark.slow
def test_two_beats_run_the_schedule_once_and_the_second_takes_over_when_the_first_dies(tmp_path):
    """Issue 13: beats on two nodes. One holds the lock and sends the probe job once a second; the
    other waits. Killed without a word (SIGKILL: no release), the first's lock expires after
    BEAT_LOCK_SECONDS and the second runs the schedule, once a second again: never two at once."""
    if not settings.REDIS_URL:
        pytest.skip("beat's lock lives in Redis (the embedded default runs one beat)")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match="mb-beat-probe*"):
        client.delete(key)
    prefix = f"mb:redbeat:test:{os.getpid()}:two-beats"
    env = {"MB_BEAT_PROBE_SECONDS": "1", "BEAT_LOCK_SECONDS": "4", "MB_REDBEAT_PREFIX": prefix}
    logs = [tmp_path / f"beat-{n}.log" for n in (1, 2)]
    beats = [start("beat", "--loglevel=INFO", "-s", str(tmp_path / f"schedule-{n}"), log=log, **env)
             for n, log in enumerate(logs)]  # fmt: skip
    try:
        for beat, log in zip(beats, logs, strict=True):
            wait_for(log, "beat: Starting", beat)
        deadline = time.monotonic() + 30
        while probes(client) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        holders = [n for n, log in enumerate(logs) if "Acquired lock" in log.read_text()]
        assert len(holders) == 1, [log.read_text()[-800:] for log in logs]
        before = probes(client)
        time.sleep(8)
        sent = probes(client) - before
        assert 6 <= sent <= 10, sent  # one beat: about 8 in 8 s (two would send about 16)

        holder, waiting = holders[0], 1 - holders[0]
        beats[holder].kill()  # SIGKILL: the lock is not released
        beats[holder].wait(10)
        wait_for(logs[waiting], "Acquired lock", beats[waiting], seconds=30)
        before = probes(client)
        time.sleep(8)
        sent = probes(client) - before
        assert 6 <= sent <= 10, sent  # the second beat, alone
    finally:
        for beat in beats:
            if beat.poll() is None:
                stop(beat)
        for key in client.scan_iter(match="mb-beat-probe*"):
            client.delete(key)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
