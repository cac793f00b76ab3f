"""Every periodic job names a registered task, and so does every name a service enqueues
(core.jobs.enqueue): a typo or a renamed task would otherwise fail only at run time."""

from __future__ import annotations

import re
from pathlib import Path

from config.celery import app
from config.schedule import CELERY_BEAT_SCHEDULE

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "workspaces", "pricing", "usage", "billing", "budgets", "dashboard", "demo", "notifications")


def registered() -> set[str]:
    app.loader.import_default_modules()
    return {name for name in app.tasks if not name.startswith("celery.")}


def test_every_schedule_entry_names_a_registered_task():
    tasks = registered()
    missing = {key: entry["task"] for key, entry in CELERY_BEAT_SCHEDULE.items() if entry["task"] not in tasks}
    assert not missing, f"schedule entries naming no task: {missing}; registered: {sorted(tasks)}"


def test_every_enqueued_name_is_a_registered_task():
    tasks = registered()
    enqueued = set()
    for app_dir in APPS:
        for path in (ROOT / app_dir).rglob("*.py"):
            enqueued |= set(re.findall(r"enqueue,?\s*\(?\s*\"([a-z_.]+)\"", path.read_text()))
    assert enqueued, "the pattern found no enqueue() call: update this test"
    assert enqueued <= tasks, f"enqueued but not registered: {sorted(enqueued - tasks)}"


def test_services_never_import_a_tasks_module():
    """One direction: tasks import services; services enqueue by name (core.jobs)."""
    offenders = []
    for app_dir in APPS:
        for path in (ROOT / app_dir).rglob("*.py"):
            if path.name == "tasks.py" or "migrations" in path.parts or "management" in path.parts:
                continue
            if re.search(r"^\s*(from \. import tasks|from \.tasks import|from \w+ import tasks|import \w+\.tasks)", path.read_text(), re.M):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"import a tasks module (enqueue by name with core.jobs.enqueue instead): {offenders}"


def test_a_web_process_can_enqueue_by_name_before_any_tasks_module_is_imported():
    """gunicorn never starts a worker, so no tasks module is imported there; enqueue() must still
    find the task (it did not: ingestion's evaluation requests failed with NotRegistered in
    production processes, while the suite, which imports tasks modules, passed)."""
    import subprocess
    import sys

    code = (
        "import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); os.environ['DEBUG'] = '1'\n"
        "import django; django.setup()\n"
        "import sys; from celery import current_app\n"
        "assert 'budgets.tasks.workspace_evaluate' not in current_app.tasks\n"
        "current_app.conf.task_always_eager = True\n"
        "from unittest import mock\n"
        "from core.jobs import enqueue\n"
        "with mock.patch('budgets.evaluation.workspace_evaluate') as evaluate:\n"
        "    enqueue('budgets.tasks.workspace_evaluate', 12345)\n"
        "evaluate.assert_called_once_with(12345)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
