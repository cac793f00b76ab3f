"""/metrics in multiprocess mode (PROMETHEUS_MULTIPROC_DIR), with real processes: a gunicorn with
two workers and a Celery worker write to one folder, and one scrape of either gunicorn worker adds
up all of them; a gunicorn worker that dies keeps its counts (gunicorn.conf.py's child_exit)."""

from __future__ import annotations

import http.client
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from bench.server import Gunicorn
from tests.budgets.conftest import _celery_worker, _children, _stop, database_url_for_tests, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
EVALUATE = "budgets.tasks.evaluations_request_due"


def get(node: Gunicorn, path: str, headers: dict | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=20)
    try:
        connection.request("POST" if body else "GET", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def scraped(node: Gunicorn) -> dict[tuple[str, frozenset], float]:
    status, text = get(node, "/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_every_process_of_the_machine_is_counted_in_one_scrape(tmp_path, issued_key):
    from config.celery import app

    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": settings.REDIS_URL,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    node = Gunicorn(env=env, workers=2, log_path=tmp_path / "gunicorn.log", ready_path="/healthz")
    app.control.purge()
    worker = _celery_worker("celery", 1, env, tmp_path / "worker.log")
    try:
        node.start()
        headers = {"Authorization": f"Bearer {issued_key.secret}", "Content-Type": "application/json"}
        now = timezone.now().isoformat()

        def send(n: int) -> int:
            body = {"event_id": f"mp-{n}", "occurred_at": now, "feature": "captioning"}
            return get(node, "/api/v1/events", headers, json.dumps(body).encode())[0]

        with ThreadPoolExecutor(8) as pool:  # two sync workers: concurrent calls reach both
            assert set(pool.map(send, range(40))) == {200}
        gunicorn_workers = _children(node.process.pid)
        assert len(gunicorn_workers) == 2
        wait_until(lambda: "ready." in (tmp_path / "worker.log").read_text(errors="replace"), 60, "the worker")
        app.send_task(EVALUATE)

        task = ("meterboard_celery_tasks_total", frozenset({("task", EVALUATE), ("outcome", "success")}))
        after = wait_until(lambda: (found := scraped(node)).get(task) and found, 30, "the worker's task in the scrape")
        assert after[("meterboard_events_total", frozenset({("feature", "captioning"), ("outcome", "accepted")}))] == 40
        assert after[("meterboard_ingest_request_duration_seconds_count", frozenset())] == 40
        writers = {path.stem.rsplit("_", 1)[1] for path in folder.glob("*.db")}
        assert {str(pid) for pid in gunicorn_workers} <= writers  # both web workers wrote their counts

        os.kill(gunicorn_workers[0], signal.SIGKILL)  # its counts stay: they happened
        wait_until(lambda: len(set(_children(node.process.pid)) - {gunicorn_workers[0]}) == 2, 30, "a new worker")
        key = ("meterboard_events_total", frozenset({("feature", "captioning"), ("outcome", "accepted")}))
        assert scraped(node)[key] == 40
    finally:
        node.stop()
        _stop(worker)
